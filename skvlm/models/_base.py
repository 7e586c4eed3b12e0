"""The adapter contract and the hook runner every adapter shares.

An adapter knows one model family: how to preprocess a batch, which modules make up
each stage's stack of hidden states, and which token is what. It knows nothing of
scikit-learn. The runner here turns a request for some (layer, pooling) pairs of a
stage into forward hooks that pool each layer's output as it is produced and stop
the forward pass after the deepest layer asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..pooling import TokenMasks, pool

STAGES = ("vision", "projector", "language")

#: The paper's extraction prompt (Zhang et al., 2024), used when ``prompt=None``.
DEFAULT_PROMPT = "What type of object is in this photo?"

#: The named poolings of every generative family's language stage.
LANGUAGE_POOLINGS = ("last", "mean", "max", "image_mean", "text_mean")


class _StopForward(Exception):
    """Raised by a hook once the deepest requested layer has been pooled."""


@dataclass
class Stack:
    """How to read one stage's hidden states off a model during a forward pass.

    Entry 0 of the stack is the input of ``blocks[0]``; entry k (1 <= k <= L) is
    the output of ``blocks[k - 1]``, except that when ``final_norm`` is set the
    last entry is that module's output (HF's convention for language models,
    whose ``hidden_states[-1]`` carries the final norm).

    Attributes
    ----------
    blocks : sequence of torch.nn.Module
        The L transformer blocks, in order.
    masks : TokenMasks or callable
        The token masks of the batch, or a function of the first captured tensor
        (batch, tokens, dim) returning them (for stacks whose token count is only
        known once the pass runs).
    final_norm : torch.nn.Module or None
        See above.
    unpack : callable
        Turns a captured tensor into (batch, tokens, dim); identity by default
        (Qwen's packed vision tensors need more).
    """

    blocks: Sequence[torch.nn.Module]
    masks: TokenMasks | Callable
    final_norm: torch.nn.Module | None = None
    unpack: Callable = field(default=lambda h: h)

    def __len__(self):
        return len(self.blocks) + 1


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if (
        isinstance(value, (tuple, list))
        and value
        and isinstance(value[0], torch.Tensor)
    ):
        return value[0]
    if hasattr(value, "last_hidden_state"):
        return value.last_hidden_state
    raise TypeError(f"cannot find a hidden-state tensor in {type(value).__name__}")


class Adapter:
    """Base class of the per-family adapters.

    Subclasses set ``family`` and ``stages`` and implement ``n_layers``,
    ``poolings``, ``dim``, ``prepare`` and either ``stack`` + ``forward`` (the
    hook runner then does the rest) or ``extract`` itself.

    Parameters
    ----------
    model : torch.nn.Module
        The loaded model, in eval mode.
    processor : object
        Its Hugging Face processor (or image processor).
    """

    family = "base"
    stages: tuple = ()
    positions = True  # whether integer token positions are valid poolings
    auto_class = "AutoModel"  # the transformers Auto class that loads the family
    # Whether an image's token count depends on its size (LLaVA-NeXT, Qwen, Idefics3):
    # batches of similar sizes then carry less padding.
    dynamic_resolution = False

    @classmethod
    def load_processor(cls, path, *, revision=None, model_kwargs=None):
        """Load the family's processor from ``path`` (overridden where HF's fails)."""
        from ._registry import load_processor

        return load_processor(path, revision=revision, model_kwargs=model_kwargs)

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor

    # -- what the stages offer -------------------------------------------------
    def n_layers(self, stage):
        """Number of entries in ``stage``'s stack (blocks + 1, or 1 for a projector)."""
        raise NotImplementedError

    def poolings(self, stage, layer):
        """Named poolings available at ``stage`` and (non-negative) ``layer``."""
        raise NotImplementedError

    def dim(self, stage):
        """Width of one pooled vector at ``stage``."""
        raise NotImplementedError

    def default_pooling(self, stage):
        """The pooling ``pooling="auto"`` resolves to."""
        names = self.poolings(stage, self.n_layers(stage) - 1)
        for name in ("cls", "last", "pooler", "mean"):
            if name in names:
                return name
        return names[0]

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    def preprocessing_config(self):
        """A JSON-able description of the preprocessing, for store keys."""
        processor = getattr(self.processor, "image_processor", self.processor)
        config = processor.to_dict() if hasattr(processor, "to_dict") else {}
        return {k: v for k, v in config.items() if not k.startswith("_")}

    def format_prompt(self, prompt):
        """The text the model sees for ``prompt`` (families with a language stage)."""
        return None

    # -- computing ---------------------------------------------------------------
    def prepare(self, images, prompts=None):
        """Preprocess a batch of RGB PIL images (and prompts) into model inputs."""
        raise NotImplementedError

    def stack(self, stage, batch):
        """The :class:`Stack` of ``stage`` for ``batch``."""
        raise NotImplementedError

    def forward(self, stage, batch):
        """Run the model far enough to produce ``stage``; return its outputs."""
        raise NotImplementedError

    def pooler(self, stage, batch, outputs):
        """The model's own pooled output of ``stage`` (last layer), (batch, dim)."""
        raise ValueError(f"{self.family} has no 'pooler' output at stage {stage!r}.")

    def extract(self, batch, stage, requests):
        """Pool the requested sites of ``stage`` in one forward pass.

        Parameters
        ----------
        batch : dict
            What :meth:`prepare` returned.
        stage : str
        requests : sequence of (int, str or int)
            (non-negative layer, pooling) pairs.

        Returns
        -------
        vectors : dict
            ``{(layer, pooling): float32 tensor (batch, dim)}``.
        """
        stack = self.stack(stage, batch)
        n = len(stack)
        by_layer: dict[int, list] = {}
        for layer, pooling in requests:
            by_layer.setdefault(layer, []).append(pooling)
        needs_output = any(p == "pooler" for ps in by_layer.values() for p in ps)
        deepest = max(by_layer)
        results = {}
        state = {"masks": stack.masks}

        def capture(layer, tensor):
            hidden = stack.unpack(tensor)
            if callable(state["masks"]):
                state["masks"] = state["masks"](hidden)
            for pooling in by_layer[layer]:
                if pooling != "pooler":
                    results[(layer, pooling)] = pool(hidden, state["masks"], pooling)
            if layer == deepest and not needs_output:
                raise _StopForward

        handles = []
        try:
            for layer in by_layer:
                handles.append(_hook(stack, layer, n, capture))
            try:
                outputs = self.forward(stage, batch)
            except _StopForward:
                outputs = None
        finally:
            for handle in handles:
                handle.remove()
        if needs_output:
            results[(n - 1, "pooler")] = self.pooler(stage, batch, outputs).float()
        missing = [r for r in requests if r not in results]
        if missing:
            raise RuntimeError(
                f"{self.family}: the forward pass never produced {missing}; this is "
                "a bug in skvlm's adapter, please report it."
            )
        return results


def _hook(stack, layer, n, capture):
    """Register the hook that captures entry ``layer`` of a stack of ``n`` entries."""
    blocks = stack.blocks
    if layer == 0:

        def pre_hook(module, args, kwargs):
            tensor = args[0] if args else kwargs["hidden_states"]
            capture(0, tensor)

        return blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
    if layer == n - 1 and stack.final_norm is not None:
        module = stack.final_norm
    else:
        module = blocks[layer - 1]

    def hook(module, args, output):
        capture(layer, _first_tensor(output))

    return module.register_forward_hook(hook)


def language_masks(input_ids, attention_mask, image_token_ids, special_ids=()):
    """Token masks of a merged language sequence.

    Parameters
    ----------
    input_ids, attention_mask : torch.Tensor, shape (batch, tokens)
    image_token_ids : iterable of int
        Ids of the positions that hold image features.
    special_ids : iterable of int
        Ids excluded from ``text_mean`` (BOS, chat-template markers, padding...).

    Returns
    -------
    TokenMasks
        ``pooled`` (``mean``/``max``) covers every valid token, image and text.
    """
    valid = attention_mask.bool()
    device = input_ids.device
    image = torch.isin(input_ids, torch.tensor(sorted(image_token_ids), device=device))
    image &= valid
    special = torch.isin(
        input_ids,
        torch.tensor(sorted(special_ids), dtype=input_ids.dtype, device=device),
    )
    text = valid & ~image & ~special
    return TokenMasks(valid=valid, pooled=valid, image=image, text=text, has_cls=False)
