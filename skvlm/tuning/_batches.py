"""Training batches and losses: prompt + answer sequences, and pooled sites.

A generation row is the processor's ids of the formatted prompt (image tokens
included), then the answer's ids and the end-of-sequence token; the loss reads
the answer tokens only. Rows are left-padded, so every answer ends at the last
position and the language-model head runs on the last few positions only.
An encoder-decoder model (Florence-2: adapters with ``encoder_decoder = True``)
takes the prompt rows as they are in its encoder, and the answer in its
decoder, behind the adapter's ``decoder_start_ids`` (the decoder start token
and BOS, as HF shifts a labelled answer right; where the prompt is the
decoder's prefix, Pix2Struct, vision-encoder-decoder and PP-FormulaNet:
behind the start token and the prompt); decoder rows are right-padded. A
head row (``objective="cross_entropy"``) is the prompt alone; its site is
the last hidden state of the adapter's language stage (after the final
norm), pooled over the prompt's valid tokens: an encoder-decoder's encoder
where the encoder reads the prompt, its decoder over the prompt where the
prompt is the decoder's prefix (Pix2Struct, vision-encoder-decoder,
PP-FormulaNet).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .._inputs import load_image
from ..models import kwargs_target, text_ids, valid_position_ids
from ..pooling import pool

#: The file of a run that holds the ``cross_entropy`` head.
HEAD = "classification_head.safetensors"

IGNORE = -100  # the label of a position that is not scored (HF's convention)

# Processor outputs aligned with input_ids, and the value an answer token takes.
# PaliGemma marks the answer (its "suffix") with token type 1, as its processor does.
_ALIGNED = {"attention_mask": 1, "mm_token_type_ids": 0}


def answer_ids(tokenizer, answers):
    """Token ids of each answer, then the end-of-sequence token when there is one.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    answers : list of str

    Returns
    -------
    ids : list of list of int
    """
    eos = tokenizer.eos_token_id
    out = []
    for answer in answers:
        ids = text_ids(tokenizer, answer)
        out.append(ids + ([eos] if eos is not None else []))
    return out


@dataclass
class GenerationBatch:
    """Model inputs of prompt + answer rows, and what the loss needs.

    Attributes
    ----------
    inputs : dict
        What the model's forward takes.
    labels : torch.Tensor of shape (rows, tokens)
        The input ids at answer positions, ``IGNORE`` elsewhere.
    keep : int
        Logits needed at the last ``keep`` positions (longest answer + 1).
    """

    inputs: dict
    labels: torch.Tensor
    keep: int


def generation_batch(adapter, images, prompts, answers):
    """Prompt + answer rows for the generation loss.

    Every input aligned with the prompt's tokens moves with them; at the answer
    positions ``attention_mask`` is 1, ``token_type_ids`` 1 (PaliGemma's
    suffix), ``mm_token_type_ids`` 0, and the family's continued inputs
    (``Traits.token_inputs``, Mllama's ``cross_attention_mask``) take the
    prompt's last token's value, as transformers' ``generate`` extends them.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
        Its ``prepare`` turns images and prompts into model inputs.
    images : list of PIL.Image.Image
    prompts : list of str
        Formatted prompts (``adapter.format_prompt``).
    answers : list of list of int
        Answer ids (from :func:`answer_ids`).

    Returns
    -------
    batch : GenerationBatch
    """
    if getattr(adapter, "encoder_decoder", False):
        return _decoder_batch(adapter, images, prompts, answers)
    inputs = dict(adapter.prepare(images, prompts))
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    rows = ids.shape[0]
    lengths = [int(mask[i].sum()) + len(answers[i]) for i in range(rows)]
    width = max(lengths)
    device = ids.device
    fill = 0
    train_pad = getattr(getattr(adapter, "traits", None), "train_pad", None)
    if train_pad is not None:  # masked positions: a token that embeds to non-zero
        fill = getattr(adapter.processor.tokenizer, f"{train_pad}_token_id")
    new = {"input_ids": torch.full((rows, width), fill, dtype=ids.dtype, device=device)}
    aligned = [k for k in (*_ALIGNED, "token_type_ids") if k in inputs]
    names = getattr(getattr(adapter, "traits", None), "token_inputs", ())
    continued = [k for k in names if k in inputs]
    for key in aligned + continued:
        value = inputs[key]
        new[key] = value.new_zeros(rows, width, *value.shape[2:])
    labels = torch.full((rows, width), IGNORE, dtype=torch.long, device=device)
    for i in range(rows):
        answer = torch.tensor(answers[i], dtype=ids.dtype, device=device)
        start = width - lengths[i]
        prompt_end = width - len(answers[i])
        new["input_ids"][i, start:prompt_end] = ids[i][mask[i]]
        new["input_ids"][i, prompt_end:] = answer
        labels[i, prompt_end:] = answer
        for key in aligned:
            new[key][i, start:prompt_end] = inputs[key][i][mask[i]]
            fill = 1 if key == "token_type_ids" else _ALIGNED[key]
            new[key][i, prompt_end:] = fill
        for key in continued:
            prompt = inputs[key][i][mask[i]]
            new[key][i, start:prompt_end] = prompt
            new[key][i, prompt_end:] = prompt[-1]
    if "position_ids" in inputs:  # counted over valid tokens, as the adapter does
        new["position_ids"] = valid_position_ids(new["attention_mask"])
    for key, value in inputs.items():
        if key not in new and key != "position_ids":
            new[key] = value
    if getattr(getattr(adapter, "traits", None), "row_positions", False):
        # each row positioned alone, as the adapter's language stage does
        new["position_ids"] = adapter.row_positions(new)
    keep = max(len(a) for a in answers) + 1
    return GenerationBatch(new, labels, keep)


def _decoder_batch(adapter, images, prompts, answers):
    """Encoder rows of the prompts; decoder rows of start tokens + answer.

    Where the prompt is the decoder's (PP-FormulaNet: ``prepare`` gives its
    ``decoder_input_ids``, start token included), a decoder row is that
    prompt's valid tokens, then the answer.
    """
    inputs = dict(adapter.prepare(images, prompts))
    prompted = inputs.pop("decoder_input_ids", None)
    valid = inputs.pop("decoder_attention_mask", None)
    if prompted is None:
        leads = [adapter.decoder_start_ids()] * len(answers)
    else:
        leads = [
            row[keep.bool()].tolist() for row, keep in zip(prompted, valid, strict=True)
        ]
    device = next(v.device for v in inputs.values() if isinstance(v, torch.Tensor))
    width = max(len(lead) + len(a) for lead, a in zip(leads, answers, strict=True))
    pad = adapter.processor.tokenizer.pad_token_id or 0
    decoder = torch.full((len(answers), width), pad, dtype=torch.long, device=device)
    labels = torch.full_like(decoder, IGNORE)
    for i, (lead, answer) in enumerate(zip(leads, answers, strict=True)):
        row = torch.tensor([*lead, *answer], dtype=torch.long, device=device)
        decoder[i, : len(row)] = row
        labels[i, len(lead) : len(row)] = row[len(lead) :]
    inputs["decoder_input_ids"] = decoder
    # logits at decoder position t predict label t + 1, as for decoder rows
    return GenerationBatch(inputs, labels, width)


def _accepts_logits_to_keep(runner):
    net = runner.get_base_model() if hasattr(runner, "get_base_model") else runner
    if "logits_to_keep" in inspect.signature(net.forward).parameters:
        return True
    # BLIP-2 / InstructBLIP pass their keyword arguments on to the language model
    language = kwargs_target(net)
    return language is not None and "logits_to_keep" in (
        inspect.signature(language.forward).parameters
    )


def generation_loss_sum(runner, batch):
    """Summed cross-entropy of the answer tokens, and their count.

    Logits at position t predict token t + 1; only the last ``batch.keep``
    positions reach the language-model head.

    Returns
    -------
    loss_sum : torch.Tensor (scalar, float32)
    n_tokens : int
    """
    kwargs = {"use_cache": False}
    if _accepts_logits_to_keep(runner):
        kwargs["logits_to_keep"] = batch.keep
    out = runner(**batch.inputs, **kwargs)
    logits = out.logits[:, -batch.keep :]
    targets = batch.labels[:, -batch.keep + 1 :]
    loss = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss, int((targets != IGNORE).sum())


def pooled_site(adapter, inputs, pooling):
    """The language model's last hidden state (after the final norm), pooled.

    Read through the adapter's capture protocol: the pass stops at the final
    norm, so the language-model head never runs. Gradients flow when the caller
    has them on.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
        Wraps the model to run (the trainable copy while training).
    inputs : dict
        Model inputs of the prompt rows (``adapter.prepare``).
    pooling : {"last", "mean"}
        The last valid token, or the mean over every valid token (image and
        text), as the paper pools.

    Returns
    -------
    vectors : torch.Tensor of shape (rows, dim), float32
    """
    last = adapter.n_layers("language") - 1

    def read(layer, hidden, masks):
        return pool(hidden, masks, pooling)

    results, _ = adapter.capture(inputs, "language", [last], read)
    return results[last]


def load_head(run_dir):
    """The classification head saved in a run: (weight, bias) as float64 arrays."""
    from safetensors.torch import load_file

    tensors = load_file(os.path.join(run_dir, HEAD))
    return tensors["weight"].double().numpy(), tensors["bias"].double().numpy()


def head_logits(adapter, head, items, prompts, pooling, batch_size):
    """The head's logits of images: their pooled site, times the head.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
        The tuned model.
    head : (ndarray, ndarray)
        Weight (n_classes, dim) and bias (n_classes,).
    items : list
        Images, not yet decoded.
    prompts : list of str or None
        Unformatted prompts (None: the default prompt).
    pooling : {"last", "mean"}
    batch_size : int

    Returns
    -------
    logits : ndarray of shape (n_images, n_classes)
    """
    weight, bias = head
    out = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            rows = range(start, min(start + batch_size, len(items)))
            images = [load_image(items[i], i) for i in rows]
            texts = [adapter.format_prompt(prompts[i]) for i in rows]
            inputs = dict(adapter.prepare(images, texts))
            out.append(pooled_site(adapter, inputs, pooling).cpu().numpy())
    return np.concatenate(out).astype(np.float64) @ weight.T + bias
