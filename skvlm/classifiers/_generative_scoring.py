"""Score class names as continuations of a cached image + prompt prefix.

The paper's code runs one full forward pass per (image, class). Here the image and
the prompt run once per image with the KV cache kept; the answer prefix extends
that cache once; then every class continuation is scored in batched passes that
read the cache expanded over the batch (a view, not a copy) and append only the
class-name tokens. Continuations are right-padded: causal attention keeps a real
token from seeing the padding after it, and padded positions are masked out of
the sums, so no attention mask is needed.

Encoder-decoder models (Florence-2, BLIP-2 and InstructBLIP with Flan-T5:
adapters with ``encoder_decoder = True``)
read the answer in the decoder: the encoder runs once per image over image and
prompt, and its states are kept; the decoder runs the adapter's start tokens
(``decoder_start_ids``: the decoder start token, then the BOS the model's
answers were trained behind; where the prompt is the decoder's prefix,
Pix2Struct and vision-encoder-decoder, whose encoder reads the image alone:
the batch's ``decoder_input_ids``, the start token and the prompt), the
answer prefix and each class's tokens, in
batched passes that cross-attend to those states expanded over the batch (a
view). The decoder is re-run from its start for each batch of classes: it is
short, and the costly part, the encoder over the image tokens, runs once.

Definition of the scored tokens (the tests' naive computation uses the same):
with ``A`` the answer prefix and ``ids`` the tokenizer without special tokens,
the continuation of class ``name`` is ``ids(A + " " + name)[len(ids(A)):]``
(``ids(name)`` when ``A`` is empty), scored after the processor's ids of the
formatted prompt followed by ``ids(A)``.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field

import numpy as np
import torch

from .._inputs import load_image
from ..models import family_traits, resolve_path, text_ids


def continuation_ids(tokenizer, answer_prefix, names):
    """Token ids of the answer prefix and of each class name after it.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    answer_prefix : str
        Text the answer starts with (may be empty).
    names : sequence of str
        Class names.

    Returns
    -------
    prefix_ids : list of int
        ``ids(answer_prefix)``.
    continuations : list of list of int
        ``ids(answer_prefix + " " + name)[len(prefix_ids):]`` for each name.
    """

    def ids(text):
        return text_ids(tokenizer, text)

    prefix_ids = ids(answer_prefix) if answer_prefix else []
    continuations = []
    for name in names:
        text = f"{answer_prefix} {name}" if answer_prefix else name
        continuations.append(ids(text)[len(prefix_ids) :])
    return prefix_ids, continuations


@dataclass
class Prefix:
    """A cached prefix of one image: what scoring a continuation needs.

    Attributes
    ----------
    kv : list of (keys, values)
        Each layer's cached keys and values, batch 1.
    length : int
        Tokens in the cache.
    next_logits : torch.Tensor of shape (vocab,)
        The logits predicting the token after the prefix.
    delta : int or None
        M-RoPE models (Qwen-VL): the offset of text positions after the prefix
        (``position = cache index + delta``); None for 1-D positions.
    replay : dict or None
        Set instead of ``kv`` when the cache cannot be shared across
        continuations (hybrid or linear-attention models such as Qwen3.5,
        whose recurrent state has no per-layer keys and values): the model
        inputs of the prefix, run again with each continuation appended.
    encoder : dict or None
        Set instead of ``kv`` for encoder-decoder models: the encoder's
        ``states`` (1, tokens, dim) and its attention ``mask``, or the
        adapter's own encoder ``outputs`` (UDOP, PP-FormulaNet), and the
        ``decoder`` ids before the class tokens.
    continued : dict
        The family's ``Traits.token_inputs`` at the prefix's last token,
        shape (1, 1, ...): every appended token takes that value (Mllama's
        ``cross_attention_mask``: which image tiles a token reads).
    held : dict
        Inputs other than tokens that every pass over the cache needs again,
        batch 1, expanded over the rows: the adapter's ``held_inputs(batch)``
        where it has one (IDEFICS's image states: its cross-attention layers
        keep nothing in the cache).
    """

    kv: list | None
    length: int
    next_logits: torch.Tensor
    delta: int | None
    replay: dict | None = None
    encoder: dict | None = None
    continued: dict = field(default_factory=dict)
    held: dict = field(default_factory=dict)


def _language_call(adapter):
    """The module that takes ``input_ids`` (+ cache, or an encoder-decoder's
    ``encoder_outputs``) without pixels and returns logits."""
    module = getattr(adapter, "language_call", None)
    if module is not None:  # a family whose forward insists on pixels (Kosmos-2)
        return module
    config = adapter.model.config
    if getattr(config, "use_decoder_only_language_model", None) is not None:
        # BLIP's forward insists on pixels: its language model alone
        return resolve_path(adapter.model, family_traits(adapter.model).language)
    return adapter.model


def _text_positions(adapter, batch):
    """The first row's positions that hold no image features (the text-only
    prior drops the others): the adapter's ``image_positions`` where it has
    one (Kosmos-2 marks them in a mask), else the image token id's."""
    positions = getattr(adapter, "image_positions", None)
    if positions is not None:
        return ~positions(batch)[0]
    return batch["input_ids"][0] != adapter.image_token_id


def _uses_mrope(adapter):
    """Whether the language model takes M-RoPE positions (3 rows per token).

    A model that keeps ``rope_deltas`` but whose rotary embedding has no
    ``mrope_section`` (EXAONE 4.5: 1-D positions) does not.
    """
    if not hasattr(_base_model(adapter), "rope_deltas"):
        return False
    rope = getattr(adapter.model.config.get_text_config(), "rope_parameters", None)
    return not isinstance(rope, dict) or "mrope_section" in rope


def _base_model(adapter):
    """The base model inside the adapter's model (its traits' ``base``), or None
    where the model is its own base."""
    path = adapter.traits.base
    return resolve_path(adapter.model, path) if path else None


def _kv(cache):
    """Each layer's (keys, values), or None for a cache that holds other state."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(
        isinstance(getattr(layer, "keys", None), torch.Tensor) for layer in layers
    ):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def _is_encoder_decoder(adapter):
    return bool(getattr(adapter, "encoder_decoder", False))


def _shares_cache(adapter):
    return getattr(getattr(adapter, "traits", None), "cache", "auto") != "recompute"


def _continued(adapter, batch):
    """The family's continued inputs at the last token of ``batch``: (1, 1, ...)."""
    names = getattr(getattr(adapter, "traits", None), "token_inputs", ())
    return {k: batch[k][:, -1:] for k in names if k in batch}


def _repeat(continued, rows, tokens):
    return {k: v.expand(rows, tokens, *v.shape[2:]) for k, v in continued.items()}


def _extend(batch, ids, continued=None):
    """``batch`` with ``ids`` (1, n) appended to its token rows."""
    n = batch["input_ids"].shape[1]
    tails = _repeat(continued or {}, 1, ids.shape[1])
    out = {}
    for key, value in batch.items():
        if key in tails:
            value = torch.cat([value, tails[key].to(value.dtype)], dim=1)
        elif (
            isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[1] == n
        ):
            fill = (
                ids
                if key == "input_ids"
                else torch.full_like(ids, 1 if key == "attention_mask" else 0)
            )
            value = torch.cat([value, fill.to(value.dtype)], dim=1)
        out[key] = value
    return out


def _set_kv(cache, kv, repeats):
    for layer, (keys, values) in zip(cache.layers, kv, strict=True):
        layer.keys = keys.expand(repeats, *keys.shape[1:])
        layer.values = values.expand(repeats, *values.shape[1:])


def _rope_axes(adapter):
    """Rows of M-RoPE positions: one per ``mrope_section`` entry (3 by default;
    HunyuanOCR has 4)."""
    rope = getattr(adapter.model.config.get_text_config(), "rope_parameters", None)
    section = rope.get("mrope_section") if isinstance(rope, dict) else None
    return len(section) if section else 3


def _positions(adapter, prefix, n_rows, n_tokens, device):
    if prefix.delta is None and getattr(adapter, "text_positions", False):
        # the cache holds tokens that input_ids do not (GIT's image): count
        # the text's, as HF's generate does
        pos = torch.arange(n_tokens, device=device) + prefix.length
        return pos.view(1, -1).expand(n_rows, n_tokens)
    if prefix.delta is None:
        return None
    pos = torch.arange(n_tokens, device=device) + prefix.length + prefix.delta
    return pos.view(1, 1, -1).expand(_rope_axes(adapter), n_rows, n_tokens)


def _last_only(module):
    """``logits_to_keep=1`` where the forward accepts it: the LM head is costly."""
    accepted = inspect.signature(module.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}


def _step(adapter, prefix, cache, input_ids, **kwargs):
    """Run ``input_ids`` (rows, tokens) on top of the prefix; return the logits."""
    rows, tokens = input_ids.shape
    _set_kv(cache, prefix.kv, rows)
    positions = _positions(adapter, prefix, rows, tokens, input_ids.device)
    if positions is not None:
        kwargs["position_ids"] = positions
    kwargs.update(_repeat(prefix.continued, rows, tokens))
    kwargs.update({k: v.expand(rows, *v.shape[1:]) for k, v in prefix.held.items()})
    out = _language_call(adapter)(
        input_ids=input_ids, cache=cache, use_cache=True, **kwargs
    )
    return out.logits


def image_prefix(adapter, image, text, answer_ids, *, with_image=True):
    """Run ``text`` (formatted prompt) on ``image``, then ``answer_ids``; keep the cache.

    With ``with_image=False`` the image tokens are dropped from the processor's
    ids and no pixels reach the model (the text-only prior).
    """
    if not with_image and hasattr(adapter, "held_inputs"):
        raise ValueError(
            f"{adapter.family}: calibration='text_prior' needs the model to read "
            "the prompt without the image, but its cross-attention layers read "
            "the image's states at every pass (its forward refuses to run "
            "without them). Use calibration='prior' (the mean score over the "
            "fitted images) or None."
        )
    batch = dict(adapter.prepare([image], [text]))
    batch.pop("position_ids", None)  # batch of one: positions are 0..n-1 anyway
    if _is_encoder_decoder(adapter):
        return _encoder_prefix(adapter, batch, answer_ids, with_image), None
    if not _shares_cache(adapter):
        return _replay_prefix(adapter, batch, answer_ids, with_image), None
    if not with_image:
        keep = _text_positions(adapter, batch)
        batch = {
            k: batch[k][0][keep][None]
            for k in ("input_ids", "token_type_ids")
            if k in batch
        }
        module = _language_call(adapter)
    else:
        module = adapter.model
    out = module(**batch, use_cache=True, **_last_only(module))
    # BLIP keeps the language model's output (and its cache) one level down
    cache = getattr(out, "language_model_outputs", out).cache
    delta = None
    if _uses_mrope(adapter):
        # set by the pass that just ran (a pass without image has none)
        deltas = _base_model(adapter).rope_deltas if with_image else None
        delta = int(deltas.reshape(-1)[0]) if deltas is not None else 0
    continued = _continued(adapter, batch) if with_image else {}
    held = getattr(adapter, "held_inputs", None)
    held = held(batch) if held is not None and with_image else {}
    prefix = Prefix(
        _kv(cache),
        batch["input_ids"].shape[1],
        out.logits[0, -1],
        delta,
        continued=continued,
        held=held,
    )
    if prefix.kv is None:
        # A hybrid cache (recurrent state): replay the prefix for each class.
        return _replay_prefix(adapter, batch, answer_ids, with_image), None
    if answer_ids:
        ids = torch.tensor([answer_ids], device=adapter.device)
        logits = _step(
            adapter, prefix, cache, ids, **_last_only(_language_call(adapter))
        )
        prefix = Prefix(
            _kv(cache),
            prefix.length + len(answer_ids),
            logits[0, -1],
            delta,
            continued=continued,
            held=held,
        )
    return prefix, cache


def _decoder_prompt(adapter, batch):
    """The decoder's ids before the answer, taken out of ``batch``: the first
    row's ``decoder_input_ids`` where the prompt is the decoder's prefix
    (Pix2Struct, vision-encoder-decoder: the start token, then the prompt),
    else the adapter's start tokens."""
    ids = batch.pop("decoder_input_ids", None)
    mask = batch.pop("decoder_attention_mask", None)
    if ids is None:
        return list(adapter.decoder_start_ids())
    row = ids[0] if mask is None else ids[0][mask[0].bool()]
    return [int(i) for i in row]


def _encoder_prefix(adapter, batch, answer_ids, with_image):
    """A :class:`Prefix` of an encoder-decoder model: its encoder states, kept.

    The decoder starts with the adapter's ``decoder_start_ids``, or, where the
    prompt is the decoder's (Pix2Struct, vision-encoder-decoder, PP-FormulaNet:
    their encoders read the image alone), with the ``decoder_input_ids`` its
    ``prepare`` gives. An adapter with an ``encoder_outputs(batch)`` method
    (UDOP, PP-FormulaNet) gives the encoder's output as its model's
    ``encoder_outputs`` argument reads it.
    """
    if not with_image and "input_ids" not in batch:
        raise ValueError(
            f"{adapter.family}: calibration='text_prior' needs the model to read "
            "the prompt without the image, but its encoder reads the image alone "
            "(the prompt is the decoder's prefix, which cross-attends to the "
            "image). Use calibration='prior' (the mean score over the fitted "
            "images) or None."
        )
    batch = dict(batch)
    prompt = _decoder_prompt(adapter, batch)
    if not with_image:
        keep = _text_positions(adapter, batch)
        batch = {
            k: batch[k][0][keep][None]
            for k in ("input_ids", "attention_mask", "bbox")  # UDOP's word boxes
            if k in batch
        }
        module = _language_call(adapter)
    else:
        module = adapter.model
    decoder = [*prompt, *answer_ids]
    ids = torch.tensor([decoder], device=adapter.device)
    encode = getattr(adapter, "encoder_outputs", None)
    if encode is not None:
        outputs = encode(batch)
        out = module(
            encoder_outputs=outputs,
            decoder_input_ids=ids,
            use_cache=False,
            **_last_only(module),
        )
        encoder = {"outputs": outputs, "decoder": decoder}
        return Prefix(None, len(decoder), out.logits[0, -1], None, encoder=encoder)
    out = module(**batch, decoder_input_ids=ids, use_cache=False, **_last_only(module))
    # BLIP keeps the language model's output one level down
    states = getattr(out, "language_model_outputs", out).encoder_last_hidden_state
    encoder = {
        "states": states,
        "mask": batch.get("attention_mask"),
        "decoder": decoder,
    }
    return Prefix(None, len(decoder), out.logits[0, -1], None, encoder=encoder)


def _decoder_logits(adapter, prefix, ids):
    """Logits of the decoder over ``ids`` (rows, tokens), given the kept encoder."""
    from transformers.modeling_outputs import BaseModelOutput

    rows = ids.shape[0]
    kept = prefix.encoder.get("outputs")
    if kept is not None:  # the adapter's own encoder output, its tensors expanded
        outputs = type(kept)(
            **{
                key: value.expand(rows, *value.shape[1:])
                for key, value in kept.items()
                if isinstance(value, torch.Tensor)
            }
        )
        return _language_call(adapter)(
            encoder_outputs=outputs, decoder_input_ids=ids, use_cache=False
        ).logits
    states = prefix.encoder["states"]
    mask = prefix.encoder["mask"]
    return _language_call(adapter)(
        encoder_outputs=BaseModelOutput(
            last_hidden_state=states.expand(rows, *states.shape[1:])
        ),
        attention_mask=None if mask is None else mask.expand(rows, -1),
        decoder_input_ids=ids,
        use_cache=False,
    ).logits


def _replay_prefix(adapter, batch, answer_ids, with_image):
    """A :class:`Prefix` without cache: its inputs, run again per continuation."""
    if not with_image:
        keep = _text_positions(adapter, batch)
        batch = {
            k: batch[k][0][keep][None]
            for k in ("input_ids", "token_type_ids")
            if k in batch
        }
    continued = _continued(adapter, batch) if with_image else {}
    module = adapter.model if with_image else _language_call(adapter)
    if with_image and hasattr(adapter, "replay_inputs"):
        # the image encoded once, its states handed to each pass (BLIP)
        module, batch = adapter.replay_inputs(batch)
    if answer_ids:
        ids = torch.tensor([answer_ids], device=adapter.device)
        batch = _extend(batch, ids, continued)
    logits = module(**batch, use_cache=False, **_last_only(module)).logits
    return Prefix(
        None,
        batch["input_ids"].shape[1],
        logits[0, -1],
        None,
        replay={"batch": batch, "module": module},
        continued=continued,
    )


def _replayed_scores(adapter, prefix, continuations):
    """Scores of continuations without a shared cache: one full pass each."""
    batch, module = prefix.replay["batch"], prefix.replay["module"]
    first = torch.log_softmax(prefix.next_logits.float(), dim=-1)
    n = prefix.length
    out = []
    for tokens in continuations:
        total = first[tokens[0]]
        if len(tokens) > 1:
            ids = torch.tensor([tokens[:-1]], device=adapter.device)
            extended = _extend(batch, ids, prefix.continued)
            logits = module(**extended, use_cache=False).logits
            logp = torch.log_softmax(logits[0, n:].float(), dim=-1)
            picked = logp.gather(
                -1, torch.tensor(tokens[1:], device=logp.device)[:, None]
            )
            total = total + picked.sum()
        out.append(total)
    return torch.stack(out)


def score_continuations(adapter, prefix, cache, continuations, batch_size):
    """Summed log-probabilities of each continuation after the prefix.

    Parameters
    ----------
    adapter : Adapter
    prefix, cache
        From :func:`image_prefix`.
    continuations : list of list of int
        Non-empty token id lists.
    batch_size : int
        Continuations per pass.

    Returns
    -------
    scores : torch.Tensor of shape (n_continuations,), float32
    """
    if prefix.replay is not None:
        return _replayed_scores(adapter, prefix, continuations)
    device = adapter.device
    n = prefix.length
    first = torch.log_softmax(prefix.next_logits.float(), dim=-1)
    out = []
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        longest = max(len(c) for c in chunk)
        ids = torch.zeros(len(chunk), longest, dtype=torch.long, device=device)
        valid = torch.zeros(len(chunk), longest, dtype=torch.bool, device=device)
        for row, tokens in enumerate(chunk):
            ids[row, : len(tokens)] = torch.tensor(tokens, device=device)
            valid[row, : len(tokens)] = True
        total = first[ids[:, 0]]
        if longest > 1 and prefix.encoder is not None:
            # the decoder from its start: prefix, then all but the last token
            start = torch.tensor(prefix.encoder["decoder"], device=device)
            full = torch.cat([start.expand(len(chunk), n), ids[:, :-1]], dim=1)
            logits = _decoder_logits(adapter, prefix, full)[:, n:]
            logp = torch.log_softmax(logits.float(), dim=-1)
            picked = logp.gather(-1, ids[:, 1:, None])[..., 0]
            total = total + (picked * valid[:, 1:]).sum(dim=1)
        elif longest > 1:
            # logits at position t predict token t + 1; the last position is unused
            logits = _step(adapter, prefix, cache, ids[:, :-1])
            logp = torch.log_softmax(logits.float(), dim=-1)
            picked = logp.gather(-1, ids[:, 1:, None])[..., 0]
            total = total + (picked * valid[:, 1:]).sum(dim=1)
        out.append(total)
    return torch.cat(out)


def score_images(
    adapter,
    items,
    texts,
    answer_ids,
    continuations,
    *,
    batch_size,
    with_image=True,
    on_batch=None,
    load=load_image,
):
    """Summed log-probabilities of every continuation for every image.

    Parameters
    ----------
    adapter : Adapter
    items : list
        Image items (anything ``load_image`` reads).
    texts : list of str
        The formatted prompt of each image (the adapter's ``format_prompt``).
    answer_ids : list of int
        The answer prefix's token ids.
    continuations : list of list of int
        Each class's token ids.
    batch_size : int
        Continuations per pass.
    with_image : bool, default=True
        False drops the image tokens (the text-only prior).
    on_batch : callable, default=None
        Called as ``on_batch(n_done, n_total, rows)`` after each image.
    load : callable, default=load_image
        ``load(item, index)`` -> RGB image (``skvlm._inputs.image_loader``).

    Returns
    -------
    scores : ndarray of shape (n_images, n_continuations), float64
    """
    rows = []
    with torch.inference_mode():
        for i, (item, text) in enumerate(zip(items, texts, strict=True)):
            prefix, cache = image_prefix(
                adapter, load(item, i), text, answer_ids, with_image=with_image
            )
            sums = score_continuations(
                adapter, prefix, cache, continuations, batch_size
            )
            rows.append(sums.cpu().numpy().astype(np.float64))
            if on_batch is not None:
                on_batch(i + 1, len(items), [i])
    return np.stack(rows)


def generate_answers(
    adapter, items, texts, *, batch_size, max_new_tokens, on_batch=None, load=load_image
):
    """Greedy answers to each (image, prompt), special tokens removed.

    ``on_batch(n_done, n_total, rows)`` is called after each batch.

    Batches are left-padded so every answer starts right after its prompt; the
    echoed prompt of decoder-only models is cut off. ``load(item, index)``
    decodes an item (``skvlm._inputs.image_loader``).
    """
    tokenizer = adapter.processor.tokenizer
    answers = []
    starts = range(0, len(items), batch_size)
    with torch.inference_mode(), _left_padding(tokenizer):
        for start in starts:
            stop = min(start + batch_size, len(items))
            images = [load(x, start + i) for i, x in enumerate(items[start:stop])]
            batch = dict(adapter.prepare(images, texts[start:stop]))
            batch.pop("position_ids", None)  # generate derives them from the mask
            answers.extend(_generate(adapter, batch, max_new_tokens))
            if on_batch is not None:
                on_batch(stop, len(items), list(range(start, stop)))
    return answers


def _generate(adapter, batch, max_new_tokens):
    """Greedy answers of one prepared batch (its rows one at a time where the
    decoder's prefixes differ in length: see :func:`_decoder_rows`)."""
    tokenizer = adapter.processor.tokenizer
    # an adapter whose model's generate needs its own framing (BLIP)
    generate = getattr(adapter, "generate", None) or adapter.model.generate
    answers = []
    for rows in _decoder_rows(batch):
        out = generate(
            **rows,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        # decoder-only LMs echo the prompt; encoder-decoders whose prompt is
        # the decoder's prefix echo that prefix
        ids = rows.get("decoder_input_ids", rows.get("input_ids"))
        if out.shape[1] >= ids.shape[1] and torch.equal(out[:, : ids.shape[1]], ids):
            out = out[:, ids.shape[1] :]
        answers.extend(
            a.strip() for a in tokenizer.batch_decode(out, skip_special_tokens=True)
        )
    return answers


def _decoder_rows(batch):
    """``batch``, or its rows one at a time where the decoder's prefixes
    (the prompt of Pix2Struct, vision-encoder-decoder, PP-FormulaNet) differ in
    length: ``generate`` would continue the right padding of the shorter ones."""
    mask = batch.get("decoder_attention_mask")
    if mask is None or bool(mask.all()):
        return [batch]
    rows = []
    for i, n in enumerate(mask.sum(dim=1).tolist()):
        row = {k: v[i : i + 1] for k, v in batch.items()}
        for key in ("decoder_input_ids", "decoder_attention_mask"):
            row[key] = row[key][:, :n]
        rows.append(row)
    return rows


@contextlib.contextmanager
def _left_padding(tokenizer):
    """Pad on the left while generating (restored afterwards)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side
