"""The training loop: AdamW, warm-up then cosine decay, accumulation, checkpoints.

The loop knows examples, a model to run and what trains; it knows nothing of
scikit-learn. It runs in every process of a distributed run (see ``_dist``):
each process computes the same global row order, takes its share of every
micro-batch, and scales its loss so that the gradients DDP averages are those
of the whole batch on one process. Its whole state (trained weights,
optimiser, schedule, the random generators of every process, position in the
epoch, early-stopping record) goes into one checkpoint file that the main
process writes atomically, so that a run killed at any moment resumes from its
last checkpoint and ends with the weights an uninterrupted run gets.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .._inputs import load_image
from ..callbacks import StopTraining, notify
from ._batches import generation_batch, generation_loss_sum, pooled_site
from ._dist import gather

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class Example:
    """One training row.

    Attributes
    ----------
    item : object
        The image, not yet decoded.
    index : int
        Its position in X (or in the instruction data), for error messages.
    prompt : str
        The formatted prompt.
    answer : list of int or None
        Answer ids (generation rows); None for a head row.
    label : int
        Class index for a head row, -1 otherwise.
    """

    item: object
    index: int
    prompt: str
    answer: list | None
    label: int = -1


@dataclass
class State:
    """Where a run is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    group: int = 0  # next optimizer step's index within the epoch
    history: list = field(default_factory=list)
    best_loss: float | None = None
    best_step: int | None = None
    bad: int = 0  # validations without improvement
    stopped: bool = False


def lr_factor(step, total, warmup):
    """Linear warm-up over ``warmup`` steps, then cosine decay towards 0 at ``total``.

    The schedule of Hugging Face's ``get_cosine_schedule_with_warmup``, which the
    paper's training code (LLaVA's, through the HF Trainer) uses.

    Examples
    --------
    >>> from skvlm.tuning._loop import lr_factor
    >>> [round(lr_factor(s, 10, 2), 3) for s in range(10)]
    [0.0, 0.5, 1.0, 0.962, 0.854, 0.691, 0.5, 0.309, 0.146, 0.038]
    """
    if step < warmup:
        return step / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def epoch_order(n_rows, n_instruction, n_mixed, seed, epoch):
    """Row order of one epoch: classification rows ``0..n_rows-1`` and mixed-in
    instruction rows ``n_rows + j``, shuffled by a generator seeded with (seed, epoch).
    """
    rng = np.random.default_rng([seed, epoch])
    extra = np.arange(n_instruction)
    if n_mixed is not None and n_instruction:
        extra = rng.choice(n_instruction, size=n_mixed, replace=n_mixed > n_instruction)
    rows = np.concatenate([np.arange(n_rows), n_rows + extra]).astype(int)
    return rows[rng.permutation(len(rows))]


def _groups(order, batch_size, accumulation):
    micro = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [micro[i : i + accumulation] for i in range(0, len(micro), accumulation)]


def steps_per_epoch(n_rows, batch_size, accumulation):
    return math.ceil(math.ceil(n_rows / batch_size) / accumulation)


class _Net(torch.nn.Module):
    """What trains, as one module (the one DDP wraps): the model and the head.

    Every forward pass of training goes through it, so the wrapper sees each
    one and synchronises the gradients of all it holds.
    """

    def __init__(self, runner, head):
        super().__init__()
        self.runner = runner
        self.head = head

    def forward(self, batch=None, head_inputs=None, pool=None):
        loss_sum = logits = None
        if batch is not None:
            loss_sum, _ = generation_loss_sum(self.runner, batch)
        if head_inputs is not None:
            logits = self.head(pool(head_inputs))
        return loss_sum, logits


class Loop:
    """One training run, in one process of one or several.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
        Wraps the trainable copy (its ``prepare`` makes the inputs).
    trainable : Trainable
    head : torch.nn.Linear or None
        The classification head (``objective="cross_entropy"``).
    examples : list of Example
        Classification rows, then instruction rows.
    n_rows : int
        How many of ``examples`` are classification rows.
    validation : list of Example or None
    settings : TrainSettings
    seed : int
    run_dir : str
        Where checkpoints go.
    accelerator : accelerate.Accelerator
    autocast_dtype : torch.dtype or None
    callbacks : list
    estimator : object
        Handed to the callbacks.
    """

    def __init__(
        self,
        adapter,
        trainable,
        head,
        examples,
        n_rows,
        validation,
        settings,
        seed,
        run_dir,
        *,
        accelerator,
        autocast_dtype=None,
        callbacks=(),
        estimator=None,
    ):
        self.adapter = adapter
        self.trainable = trainable
        self.head = head
        self.examples = examples
        self.n_rows = n_rows
        self.validation = validation
        self.settings = settings
        self.seed = seed
        self.run_dir = run_dir
        self.accelerator = accelerator
        self.autocast_dtype = autocast_dtype
        self.callbacks = callbacks
        self.estimator = estimator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes
        s = settings
        n_instruction = len(examples) - n_rows
        self.n_mixed = None if s.mix_ratio is None else round(s.mix_ratio * n_rows)
        n_epoch = n_rows + (n_instruction if self.n_mixed is None else self.n_mixed)
        self.steps_per_epoch = steps_per_epoch(n_epoch, s.batch_size, s.accumulation)
        self.total_steps = self.steps_per_epoch * s.max_iter
        optimizer = torch.optim.AdamW(self._param_groups(), **s.optimizer)
        warmup = math.ceil(s.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, self.total_steps, warmup)
        )
        self.model, self.optimizer = accelerator.prepare(
            _Net(trainable.runner, head), optimizer
        )
        # float16 gradients underflow without loss scaling (bfloat16's do not);
        # accelerate scales them itself under mixed_precision="fp16"
        self.scaler = (
            torch.amp.GradScaler(adapter.device.type)
            if autocast_dtype == torch.float16 and accelerator.scaler is None
            else None
        )
        self.fill = None
        if s.image_aspect == "pad":
            from ._data import image_mean

            self.fill = image_mean(adapter)
        self.state = State()

    # -- set-up --------------------------------------------------------------------
    def _param_groups(self):
        s, t = self.settings, self.trainable
        main = [p for n, p in t.params.items() if n not in t.projector]
        projector = [p for n, p in t.params.items() if n in t.projector]
        groups = [
            {"params": main, "lr": s.learning_rate},
            {"params": projector, "lr": s.projector_learning_rate},
        ]
        if self.head is not None:
            groups.append(
                {"params": list(self.head.parameters()), "lr": s.head_learning_rate}
            )
        return [g for g in groups if g["params"]]

    def _trained_tensors(self):
        out = {f"model.{n}": p for n, p in self.trainable.params.items()}
        if self.head is not None:
            out.update({f"head.{n}": p for n, p in self.head.named_parameters()})
        return out

    # -- checkpoints -----------------------------------------------------------------
    def _rng_state(self):
        state = {"cpu": torch.get_rng_state()}
        if self.adapter.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.adapter.device)
        return state

    def save(self, name=CHECKPOINT, *, full=True):
        """Write the trained tensors (and, when ``full``, the whole run state).

        Every process calls it (the random states are gathered); the main
        process writes.
        """
        rng = gather(self.accelerator, self._rng_state()) if full else None
        if not self.accelerator.is_main_process:
            return
        payload = {
            "tensors": {k: v.detach().cpu() for k, v in self._trained_tensors().items()}
        }
        if full:
            payload["optimizer"] = self.optimizer.state_dict()
            payload["scheduler"] = self.scheduler.state_dict()
            payload["state"] = asdict(self.state)
            payload["rng"] = rng
            payload["n_processes"] = self.world
            if self.scaler is not None:
                payload["scaler"] = self.scaler.state_dict()
        path = os.path.join(self.run_dir, name)
        tmp = path + ".tmp"
        torch.save(payload, tmp)
        os.replace(tmp, path)

    def _load_tensors(self, tensors):
        with torch.no_grad():
            for key, param in self._trained_tensors().items():
                param.copy_(tensors[key].to(param.device, param.dtype))

    def resume(self):
        """Load the run's checkpoint when there is one; return whether it did."""
        path = os.path.join(self.run_dir, CHECKPOINT)
        if not os.path.exists(path):
            return False
        payload = torch.load(path, map_location="cpu", weights_only=True)
        self._load_tensors(payload["tensors"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.state = State(**payload["state"])
        if self.scaler is not None and "scaler" in payload:
            self.scaler.load_state_dict(payload["scaler"])
        rng = payload["rng"]
        if isinstance(rng, torch.Tensor):  # a checkpoint of the previous release
            rng = [{"cpu": rng}]
        if len(rng) != self.world:
            warnings.warn(
                f"The checkpoint in {self.run_dir} was written by {len(rng)} "
                f"processes and this run has {self.world}: the weights, optimizer "
                "and data position resume, but dropout draws other numbers than "
                "the interrupted run would have.",
                stacklevel=2,
            )
        mine = rng[self.rank % len(rng)]
        torch.set_rng_state(mine["cpu"])
        if "cuda" in mine and self.adapter.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], self.adapter.device)
        return True

    def restore_best(self):
        self.accelerator.wait_for_everyone()  # the main process wrote it
        path = os.path.join(self.run_dir, BEST)
        if os.path.exists(path):
            payload = torch.load(path, map_location="cpu", weights_only=True)
            self._load_tensors(payload["tensors"])

    def clean(self):
        for name in (CHECKPOINT, BEST):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.run_dir, name))

    # -- losses ------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.adapter.device.type, dtype=self.autocast_dtype)

    def _images(self, rows):
        from ._data import padded

        if self.fill is not None:
            return [padded(r.item, r.index, self.fill) for r in rows]
        return [load_image(r.item, r.index) for r in rows]

    def _pool(self, inputs):
        return pooled_site(self.adapter, inputs, self.settings.pooling)

    def _micro_loss(self, rows, norm, model=None):
        """Loss of some rows, scaled so that a group's losses add up to its mean.

        ``norm`` holds the group's totals (over every process): head rows, all
        rows, answer tokens.
        """
        model = self.model if model is None else model
        total = torch.zeros((), device=self.adapter.device)
        gen = [r for r in rows if r.answer is not None]
        heads = [r for r in rows if r.answer is None]
        batch = head_inputs = None
        with self._autocast():
            if gen:
                batch = generation_batch(
                    self.adapter,
                    self._images(gen),
                    [r.prompt for r in gen],
                    [r.answer for r in gen],
                )
            if heads:
                head_inputs = dict(
                    self.adapter.prepare(self._images(heads), [r.prompt for r in heads])
                )
            loss_sum, logits = model(batch, head_inputs, self._pool)
            if gen:
                weight = (norm["rows"] - norm["heads"]) / norm["rows"]
                total = total + weight * loss_sum / norm["tokens"]
            if heads:
                labels = torch.tensor([r.label for r in heads], device=logits.device)
                ce = F.cross_entropy(logits.float(), labels, reduction="sum")
                total = total + ce / norm["rows"]
        return total

    @staticmethod
    def _norm(rows):
        gen_tokens = sum(len(r.answer) for r in rows if r.answer is not None)
        heads = sum(r.answer is None for r in rows)
        return {"rows": len(rows), "heads": heads, "tokens": max(gen_tokens, 1)}

    def _share(self, batch):
        """This process's rows of a global micro-batch, and their weight (0 for a
        stand-in row where the batch has fewer rows than processes)."""
        mine = np.array_split(np.asarray(batch), self.world)[self.rank]
        if len(mine):
            return [self.examples[i] for i in mine], 1.0
        return [self.examples[batch[0]]], 0.0

    def _sum(self, value):
        """``value`` summed over the processes."""
        if self.world == 1:
            return value
        tensor = torch.tensor(value, dtype=torch.float64, device=self.adapter.device)
        return float(self.accelerator.reduce(tensor, reduction="sum"))

    def validation_loss(self):
        """The objective over the validation rows, in eval mode, without gradients."""
        rows = self.validation
        net = self.accelerator.unwrap_model(self.model)
        self._train_mode(False)
        total = 0.0
        norm = self._norm(rows)
        with torch.no_grad():
            for start in range(0, len(rows), self.settings.batch_size):
                chunk = np.arange(
                    start, min(start + self.settings.batch_size, len(rows))
                )
                mine = np.array_split(chunk, self.world)[self.rank]
                if len(mine):
                    local = [rows[i] for i in mine]
                    total += float(self._micro_loss(local, norm, model=net))
        self._train_mode(True)
        return self._sum(total)

    def _train_mode(self, on):
        self.model.train(on)
        if on:
            # a frozen normalisation layer with running statistics (the batch
            # norms of a convolutional tower: FastVLM's FastViT) keeps them: in
            # train mode it would update them and use the batch's own
            for module in self.model.modules():
                frozen = not any(p.requires_grad for p in module.parameters())
                if frozen and getattr(module, "running_mean", None) is not None:
                    module.eval()

    # -- the loop ------------------------------------------------------------------------
    def run(self):
        """Train until ``max_iter`` epochs, early stopping or a callback's
        :class:`StopTraining`; return the final State."""
        s, state = self.settings, self.state
        params = list(self._trained_tensors().values())
        bar = self._bar()
        self._train_mode(True)
        try:
            while state.epoch < s.max_iter and not state.stopped:
                order = epoch_order(
                    self.n_rows,
                    len(self.examples) - self.n_rows,
                    self.n_mixed,
                    self.seed,
                    state.epoch,
                )
                groups = _groups(order, s.batch_size, s.accumulation)
                while state.group < len(groups) and not state.stopped:
                    self._step(groups[state.group], params, bar)
                    state.group += 1
                    last_of_epoch = state.group == len(groups)
                    if last_of_epoch:
                        state.epoch += 1
                        state.group = 0
                    self._maybe_validate(last_of_epoch)
                    if s.checkpoint_every and (
                        state.step % s.checkpoint_every == 0
                        or state.stopped
                        or state.epoch == s.max_iter
                    ):
                        self.save()
                    self._after_step(last_of_epoch)
                    if last_of_epoch:
                        break
        finally:
            if bar is not None:
                bar.close()
            self._train_mode(False)
        if s.early_stopping:
            self.restore_best()
        return state

    def _after_step(self, last_of_epoch):
        """The callbacks' step (and epoch) events; a StopTraining in any process
        stops every process after this step."""
        state, entry = self.state, self.state.history[-1]
        try:
            notify(
                self.callbacks,
                "on_step_end",
                self.estimator,
                step=state.step,
                n_steps=self.total_steps,
                loss=entry["loss"],
                learning_rate=entry["lr"],
                epoch=entry["epoch"],
            )
            if last_of_epoch:
                epoch = [h for h in state.history if h["epoch"] == state.epoch]
                checked = [
                    h["validation_loss"] for h in epoch if "validation_loss" in h
                ]
                notify(
                    self.callbacks,
                    "on_epoch_end",
                    self.estimator,
                    epoch=state.epoch,
                    train_loss=float(np.mean([h["loss"] for h in epoch])),
                    valid_loss=checked[-1] if checked else None,
                    valid_score=None,
                )
        except StopTraining:
            self.accelerator.set_trigger()
        if self.accelerator.check_trigger():
            state.stopped = True

    def _step(self, group, params, bar):
        rows = [self.examples[i] for batch in group for i in batch]
        norm = self._norm(rows)
        loss = 0.0
        scaler = self.scaler
        accelerator = self.accelerator
        for k, batch in enumerate(group):
            local, weight = self._share(batch)
            last = k == len(group) - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(self.model)
            with sync:
                micro = self._micro_loss(local, norm)
                scaled = micro * (weight * self.world) if self.world > 1 else micro
                accelerator.backward(scaled if scaler is None else scaler.scale(scaled))
            loss += float(micro.detach()) * weight
        loss = self._sum(loss)
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        if self.settings.max_grad_norm is not None:
            accelerator.clip_grad_norm_(params, self.settings.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)  # skipped when a gradient is inf or NaN
            scaler.update()
        with warnings.catch_warnings():
            # a step the scaler skipped still counts in the schedule (as in HF's
            # Trainer); torch warns about that order
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state = self.state
        state.step += 1
        state.history.append(
            {"step": state.step, "epoch": state.epoch + 1, "loss": loss, "lr": lr}
        )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if self.settings.verbose >= 2 and self.accelerator.is_main_process:
            print(
                f"step {state.step}/{self.total_steps}  epoch {state.epoch + 1}  "
                f"loss {loss:.4f}  lr {lr:.3g}",
                flush=True,
            )

    def _maybe_validate(self, end_of_epoch):
        s, state = self.settings, self.state
        if not s.early_stopping:
            return
        due = (
            state.step % s.validation_every == 0 if s.validation_every else end_of_epoch
        )
        if not due:
            return
        loss = self.validation_loss()
        state.history[-1]["validation_loss"] = loss
        if state.best_loss is None or loss < state.best_loss - s.tol:
            state.best_loss, state.best_step, state.bad = loss, state.step, 0
            self.save(BEST, full=False)
        else:
            state.bad += 1
            if state.bad >= s.n_iter_no_change:
                state.stopped = True

    def _bar(self):
        if self.settings.verbose < 1 or not self.accelerator.is_main_process:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.state.step, desc="fine-tuning")
