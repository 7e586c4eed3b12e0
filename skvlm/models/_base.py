"""The adapter contract, and the capture protocol every adapter shares.

An adapter knows one model family: how to preprocess a batch, which modules make up
each stage's stack of hidden states, and which token is what. It knows nothing of
scikit-learn. :meth:`Adapter.capture` runs a stage's forward pass with forward
hooks that hand each requested layer's hidden states to a reader as the pass
produces them, and stops the pass after the deepest one; :meth:`Adapter.extract`
is the reader that pools.

Hooks are registered per call and fire only for the thread that registered them,
so threads sharing one model (the registry shares it with every estimator) never
read each other's tensors, and no hook outlives its call.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .._site import STAGES
from ..pooling import TokenMasks, pad_tokens, pool
from ._chat import DEFAULT_PROMPT
from ._loading import directory_digest, files_state, load_processor

#: The named poolings of every generative family's language stage.
LANGUAGE_POOLINGS = ("last", "mean", "max", "image_mean", "text_mean")

#: The named poolings of a stage whose entries are per-image token lists.
TOKEN_POOLINGS = ("mean", "max")

__all__ = [
    "DEFAULT_PROMPT",
    "LANGUAGE_POOLINGS",
    "STAGES",
    "TOKEN_POOLINGS",
    "Adapter",
    "Stack",
    "language_masks",
    "pool_token_lists",
]


class _StopForward(Exception):
    """Raised by a hook once the deepest requested layer has been read."""


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
    entry_masks : bool
        Whether ``masks`` (a callable) is asked again for every entry, right
        after ``unpack``: for stacks whose entries differ in token layout (a
        packed tower that merges its tokens between blocks, a hierarchy's
        stages, a chained tower's encoders). Otherwise it is asked once, for
        the first entry read, and its masks serve every entry.
    """

    blocks: Sequence[torch.nn.Module]
    masks: TokenMasks | Callable
    final_norm: torch.nn.Module | None = None
    unpack: Callable = field(default=lambda h: h)
    entry_masks: bool = False

    def __len__(self):
        return len(self.blocks) + 1


class Adapter:
    """Base class of the per-family adapters.

    Subclasses set ``family`` and ``stages`` and implement ``n_layers``,
    ``poolings``, ``dim``, ``prepare`` and ``stack`` + ``forward`` (the capture
    protocol then does the rest), overriding ``extract`` only for a stage that
    is no stack of blocks (a projector's output).

    Parameters
    ----------
    model : torch.nn.Module
        The loaded model, in eval mode.
    processor : object
        Its Hugging Face processor (or image processor).

    Attributes
    ----------
    family : str
        The family's name in messages and store manifests.
    stages : tuple of str
        The stages the model offers.
    positions : bool
        Whether integer token positions are valid poolings.
    raster_stages : tuple of str
        Stages whose patch tokens come one per patch in raster order (row by
        row, one image per row of the batch), as token-level spatial importance
        needs them.
    prompt_stages : tuple of str
        Stages whose features depend on the prompt.
    dynamic_resolution : bool
        Whether an image's token count depends on its size; batches of similar
        sizes then carry less padding.
    encoder_decoder : bool
        Whether the language model is an encoder-decoder (Florence-2's BART,
        BLIP-2's Flan-T5): the language stage is its encoder, and generative
        scoring and the tuner put the answer in its decoder, behind
        :meth:`decoder_start_ids`.
    source : dict
        Set by the registry: ``model`` (as given), ``path`` (resolved),
        ``revision``.
    """

    family = "base"
    stages: tuple = ()
    positions = True
    raster_stages: tuple = ()
    prompt_stages: tuple = ("language",)
    auto_class = "AutoModel"  # the transformers Auto class that loads the family
    dynamic_resolution = False
    encoder_decoder = False

    @classmethod
    def load_processor(cls, path, *, revision=None, model_kwargs=None):
        """Load the family's processor from ``path`` (overridden where HF's fails)."""
        return load_processor(path, revision=revision, model_kwargs=model_kwargs)

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor

    @functools.cached_property
    def traits(self):
        """The family's :class:`~skvlm.models.Traits`, derived from the model."""
        from ._traits import family_traits

        return family_traits(self.model)

    def decoder_start_ids(self):
        """An encoder-decoder's decoder tokens before an answer.

        Its ``decoder_start_token_id``, then the tokens the tokenizer puts in
        front of a text (BART's ``<s>``; none for T5): HF shifts a labelled
        answer, tokenized with its special tokens, right behind the start token.

        Returns
        -------
        ids : list of int

        Examples
        --------
        >>> import tempfile
        >>> from skvlm.models import load_adapter
        >>> from skvlm.testing import make_tiny_blip2_t5
        >>> adapter = load_adapter(make_tiny_blip2_t5(tempfile.mkdtemp()), device="cpu")
        >>> adapter.decoder_start_ids() == [adapter.processor.tokenizer.pad_token_id]
        True
        """
        start = self.model.config.get_text_config().decoder_start_token_id
        tokenizer = self.processor.tokenizer
        framed = tokenizer("a")["input_ids"]
        bare = tokenizer("a", add_special_tokens=False)["input_ids"]
        lead = framed[: framed.index(bare[0])] if bare and bare[0] in framed else []
        return [int(start), *map(int, lead)]

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

    def dims(self, stage):
        """Width of each entry of ``stage``'s stack, entry 0 first.

        One width for all entries, except in hierarchical encoders (ConvNeXt,
        Swin...), whose stages widen as they downsample.
        """
        return (self.dim(stage),) * self.n_layers(stage)

    def default_pooling(self, stage):
        """The pooling ``pooling="auto"`` resolves to."""
        names = self.poolings(stage, self.n_layers(stage) - 1)
        for name in ("cls", "last", "pooler", "mean"):
            if name in names:
                return name
        return names[0]

    def sites(self, stage):
        """Every (layer, named pooling) pair of ``stage``, layer by layer."""
        return [
            (layer, pooling)
            for layer in range(self.n_layers(stage))
            for pooling in self.poolings(stage, layer)
        ]

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

    def identity(self):
        """What decides the model's outputs, as a dict a store namespace hashes.

        The resolved path and revision, the whole config and, for a local
        directory, a hash of every file in it (every weight byte included;
        see :func:`skvlm.models.directory_digest`). Hub ids are identified by
        their revision's commit hash, which is content-addressed.

        Raises
        ------
        RuntimeError
            The directory's files changed since the model was loaded: the
            weights in memory are no longer those files (load it again).
        """
        source = dict(getattr(self, "source", {}))
        source.pop("model", None)  # as typed by the user; "path" is the resolved one
        loaded = source.pop("files", None)
        path = source.get("path")
        files = None
        if path and os.path.isdir(path):
            files = directory_digest(path)
            if loaded is not None and files_state(path) != loaded:
                raise RuntimeError(
                    f"The files of {path!r} changed since the model was loaded, so "
                    "its weights in memory are not those files. Run again: skvlm "
                    "reloads a model whose directory changed."
                )
        return {
            **source,
            "config": self.model.config.to_json_string(use_diff=False),
            "files": files,
        }

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

    def capture(self, batch, stage, layers, read, *, need_outputs=False):
        """Run ``stage``'s forward pass and read the hidden states of some layers.

        Parameters
        ----------
        batch : dict
            What :meth:`prepare` returned.
        stage : str
        layers : iterable of int
            Non-negative entries of the stage's stack.
        read : callable
            ``read(layer, hidden, masks)`` with ``hidden`` of shape (batch,
            tokens, dim) in the model's dtype and ``masks`` the batch's
            :class:`~skvlm.pooling.TokenMasks`; called once per layer as the pass
            produces it. Its return value is kept.
        need_outputs : bool, default=False
            Run the pass to its end and return the model's outputs (for
            ``pooler``); otherwise the pass stops after the deepest layer.

        Returns
        -------
        results : dict
            ``{layer: read(...)}``.
        outputs : object or None
            What :meth:`forward` returned, when ``need_outputs``.

        Notes
        -----
        It runs under whatever grad mode the caller chose: extraction runs it in
        ``torch.inference_mode()``, training with gradients. The hooks are this
        call's and this thread's only.
        """
        stack = self.stack(stage, batch)
        n = len(stack)
        wanted = sorted(set(layers))
        if not wanted:
            raise ValueError("capture needs at least one layer.")
        deepest = wanted[-1]
        owner = threading.get_ident()
        stop = _StopForward()
        results = {}
        state = {"masks": stack.masks}

        def on_entry(layer, tensor):
            if threading.get_ident() != owner:
                return  # another thread's pass through the shared model
            if tensor is None:
                raise TypeError(f"{self.family}: no hidden states reached layer 0.")
            hidden = stack.unpack(tensor)
            if stack.entry_masks:
                masks = stack.masks(hidden)
            else:
                if callable(state["masks"]):
                    state["masks"] = state["masks"](hidden)
                masks = state["masks"]
            results[layer] = read(layer, hidden, masks)
            if layer == deepest and not need_outputs:
                raise stop

        handles = []
        outputs = None
        try:
            for layer in wanted:
                handles.append(_hook(stack, layer, n, on_entry))
            try:
                outputs = self.forward(stage, batch)
            except _StopForward as exc:
                if exc is not stop:
                    raise
        finally:
            for handle in handles:
                handle.remove()
        missing = [layer for layer in wanted if layer not in results]
        if missing:
            raise RuntimeError(
                f"{self.family}: the forward pass of stage {stage!r} never produced "
                f"layers {missing}; this is a bug in skvlm's adapter, please report it."
            )
        return results, outputs

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
        by_layer: dict[int, list] = {}
        for layer, pooling in requests:
            by_layer.setdefault(layer, []).append(pooling)
        needs_output = any(p == "pooler" for ps in by_layer.values() for p in ps)

        def read(layer, hidden, masks):
            return {p: pool(hidden, masks, p) for p in by_layer[layer] if p != "pooler"}

        results, outputs = self.capture(
            batch, stage, by_layer, read, need_outputs=needs_output
        )
        vectors = {
            (layer, p): v
            for layer, pooled in results.items()
            for p, v in pooled.items()
        }
        if needs_output:
            last = self.n_layers(stage) - 1
            vectors[(last, "pooler")] = self.pooler(stage, batch, outputs).float()
        return vectors


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


def _hook(stack, layer, n, on_entry):
    """Register the hook that reads entry ``layer`` of a stack of ``n`` entries."""
    blocks = stack.blocks
    if layer == 0:
        # torch records a with_kwargs hook and its flag in two steps: another
        # thread's pass in between calls it without kwargs (and is ignored).
        def pre_hook(module, args, kwargs=None):
            kwargs = kwargs or {}
            # Llama 4's vision blocks take ``hidden_state``
            tensor = args[0] if args else kwargs.get("hidden_states")
            if tensor is None:
                tensor = kwargs.get("hidden_state")
            on_entry(0, tensor)

        return blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)
    if layer == n - 1 and stack.final_norm is not None:
        module = stack.final_norm
    else:
        module = blocks[layer - 1]

    def hook(module, args, output):
        on_entry(layer, _first_tensor(output))

    return module.register_forward_hook(hook)


def pool_token_lists(entries, requests):
    """Pool (layer, pooling) requests of a stack of per-image token lists.

    Parameters
    ----------
    entries : sequence of list of torch.Tensor
        ``entries[layer][i]`` holds image ``i``'s tokens, (tokens_i, dim).
    requests : sequence of (int, str or int)

    Returns
    -------
    dict
        ``{(layer, pooling): float32 tensor (batch, dim)}``; padding is masked.
    """
    out = {}
    for layer in sorted({layer for layer, _ in requests}):
        hidden, valid = pad_tokens(entries[layer])
        masks = TokenMasks(valid=valid, pooled=valid)
        for requested, pooling in requests:
            if requested == layer:
                out[(layer, pooling)] = pool(hidden, masks, pooling)
    return out


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
