"""tiny-llava with a class-frequency schedule: the paper's cause, built in.

Zhang et al. (NeurIPS 2024) trace LLaVA's poor classification to how rarely its
training text names a class. This module trains the tiny LLaVA shipped with skvlm
so that its training text names the ten digits at frequencies spanning three
orders of magnitude, down to zero:

1. **text-only stage** (the language model's "pretraining"): sentences such as
   "seven is a digit ." name every digit equally often (``TEXT_TEMPLATES``), so
   the language model knows every class word before it sees an image;
2. **instruction stage** (LLaVA's visual instruction tuning; tiny-clip's vision
   tower frozen, projector and language model trained): each training image is
   asked "What type of object is in this photo?" and answered either with its
   name, "The photo features a seven .", or with a generic answer, "The photo
   features a digit ." (one of ``GENERIC_WORDS``). Per seed, the classes are put
   in a random order and the ``k``-th class gets the named answer on a share
   ``10 ** (-3 k / 8)`` of its training renderings (1, 0.42, 0.18, ..., 0.001),
   the last class never.

The exact text of both stages is saved beside the weights
(``pretraining_text.txt.gz``, one sentence a line; ``instruction_text.jsonl.gz``,
one conversation a line), so that ``skvlm.analysis.class_frequency`` counts what
the model saw, and ``schedule.json`` records the order, shares and counts.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from skvlm.datasets import DIGIT_NAMES

PROMPT = "What type of object is in this photo?"
ANSWER = "The photo features a {} ."  # the paper's answer prefix + a word
GENERIC_WORDS = ("digit", "number", "symbol", "sign")
N_DECADES = 3  # shares span 10**0 .. 10**-N_DECADES, then one class at zero
TEXT_TEMPLATES = (
    "{} is a digit .",
    "{} is a number .",
    "the digit {} .",
    "this is the number {} .",
    "a {} is a digit .",
    "the word {} names a digit .",
    "i can write the digit {} .",
    "{} is a small number .",
)
LM = dict(
    model_type="llama",
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=128,
)
EXTRA_WORDS = (
    "The",
    "USER",
    "ASSISTANT",
    "What",
    "photo",
    "features",
    "symbol",
    "sign",
    "word",
    "names",
    "can",
    "write",
    "small",
    "i",
)


# -- the schedule ----------------------------------------------------------------
def shares(n_classes=10, n_decades=N_DECADES):
    """Named-answer share of each frequency rank: log-spaced from 1, last one 0."""
    ranks = np.arange(n_classes - 1)
    return np.append(10.0 ** (-n_decades * ranks / (n_classes - 2)), 0.0)


def frequency_schedule(y, seed):
    """Which training renderings get the named answer, for one seed.

    Parameters
    ----------
    y : ndarray of int
        The class of each training rendering.
    seed : int

    Returns
    -------
    named : ndarray of bool
        True where the rendering's answer names its class.
    generic : ndarray of int
        Index into ``GENERIC_WORDS`` of each rendering's generic answer.
    info : dict
        ``order`` (classes, most named first), ``share`` per class, ``named``
        (renderings named) per class.
    """
    rng = np.random.RandomState(1000 + seed)
    order = rng.permutation(10)
    share_of = dict(zip(order.tolist(), shares().tolist(), strict=True))
    named = np.zeros(len(y), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(y == c)
        k = int(round(share_of[c] * len(members)))
        named[rng.choice(members, k, replace=False)] = True
    generic = rng.randint(len(GENERIC_WORDS), size=len(y))
    info = {
        "order": [DIGIT_NAMES[c] for c in order],
        "share": {DIGIT_NAMES[c]: share_of[c] for c in range(10)},
        "named": {DIGIT_NAMES[c]: int(named[y == c].sum()) for c in range(10)},
        "renderings": {DIGIT_NAMES[c]: int((y == c).sum()) for c in range(10)},
    }
    return named, generic, info


def answer_words(y, named, generic):
    """The word after the answer prefix for each rendering."""
    return [
        DIGIT_NAMES[c] if n else GENERIC_WORDS[g]
        for c, n, g in zip(y.tolist(), named.tolist(), generic.tolist(), strict=True)
    ]


def text_corpus():
    """The text-only stage: every template with every digit name, once."""
    return [t.format(name) for name in DIGIT_NAMES for t in TEXT_TEMPLATES]


# -- model -----------------------------------------------------------------------
def build_llava(clip, make_tokenizer, add_bos_eos, image_processor, template, seed):
    """LLaVA-1.5 around tiny-clip's vision tower, with a fresh projector and LM."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = make_tokenizer(
        ["<image>"],
        extra_words=EXTRA_WORDS,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
    )
    add_bos_eos(tokenizer, "<s> $A")  # Llama prepends BOS, never appends EOS
    vision = clip.config.vision_config
    processor = LlavaProcessor(
        image_processor=image_processor(),
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    config = LlavaConfig(
        vision_config=dict(vision.to_dict(), projection_dim=clip.config.projection_dim),
        text_config=dict(
            LM,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=processor.image_token_id,
        vision_feature_layer=-2,
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    # LLaVA reuses a trained CLIP vision tower; ours is tiny-clip's.
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    return model, processor


def prompt_text(processor):
    """The chat-formatted question, as skvlm and the tuner format it."""
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": PROMPT}],
        }
    ]
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )


def answer_ids(processor, image, words):
    """Token ids of prompt + answer + EOS for each answer word, and the answer start."""
    prompt = prompt_text(processor)
    prompt_ids = processor(images=[image], text=[prompt], return_tensors="pt")[
        "input_ids"
    ][0].tolist()
    tok = processor.tokenizer
    table = {}
    for word in sorted(set(words)):
        answer = tok(ANSWER.format(word), add_special_tokens=False)["input_ids"]
        table[word] = prompt_ids + answer + [tok.eos_token_id]
    assert len({len(r) for r in table.values()}) == 1, "answers must align"
    seqs = torch.tensor([table[w] for w in words])
    return seqs, len(prompt_ids)


def tower_features(model, pix, batch_size=512):
    """The frozen tower's selected feature layer, CLS dropped (LLaVA 'default')."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(pix), batch_size):
            hidden = model.model.vision_tower(
                pixel_values=pix[i : i + batch_size], output_hidden_states=True
            ).hidden_states
            out.append(hidden[model.config.vision_feature_layer][:, 1:])
    return torch.cat(out)


def llava_logits(model, ids, features):
    """Logits of LLaVA's forward pass from precomputed tower features.

    The same computation as ``LlavaForConditionalGeneration.forward`` (checked
    against it before training), minus the frozen tower, run once per image.
    """
    embeds = model.model.get_input_embeddings()(ids)
    image = model.model.multi_modal_projector(features)
    mask = (ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(mask, image.to(embeds.dtype))
    hidden = model.model.language_model(
        inputs_embeds=embeds, use_cache=False
    ).last_hidden_state
    return model.lm_head(hidden)


def _optimizer(params, steps, lr, schedule):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    return opt, schedule(opt, steps, warmup=max(1, steps // 20))


def train_text(
    model, processor, *, epochs, schedule, seed, batch_size=16, lr=2e-3, log=print
):
    """Stage 1: next-token loss on every token of the text corpus; LM only."""
    tok = processor.tokenizer
    corpus = text_corpus()
    enc = tok(
        [s + " " + tok.eos_token for s in corpus],
        padding="longest",
        padding_side="right",
        return_tensors="pt",
    )
    ids, mask = enc["input_ids"], enc["attention_mask"]
    lm = model.model.language_model
    params = [*lm.parameters(), *model.lm_head.parameters()]
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(ids) / batch_size)
    opt, sched = _optimizer(params, steps, lr, schedule)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(ids), generator=gen).split(batch_size):
            hidden = lm(
                input_ids=ids[idx], attention_mask=mask[idx], use_cache=False
            ).last_hidden_state
            logits = model.lm_head(hidden)[:, :-1]
            target = ids[idx][:, 1:].masked_fill(mask[idx][:, 1:] == 0, -100)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch == epochs - 1 or (epoch + 1) % 10 == 0:
            log(f"  text epoch {epoch + 1}/{epochs}: loss {total / len(ids):.4f}")
    return model.eval()


def train_instructions(
    model,
    seqs,
    start,
    feats,
    *,
    epochs,
    schedule,
    seed,
    batch_size=64,
    lr=2e-3,
    log=print,
):
    """Stage 2: answer-only next-token loss; projector + LM, tower frozen."""
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(seqs) / batch_size)
    opt, sched = _optimizer(params, steps, lr, schedule)
    word = ANSWER.split().index("{}")  # the answer word's offset in the answer
    model.train()
    for epoch in range(epochs):
        total = correct = 0.0
        for idx in torch.randperm(len(seqs), generator=gen).split(batch_size):
            ids = seqs[idx]
            logits = llava_logits(model, ids, feats[idx])
            pred, target = logits[:, start - 1 : -1], ids[:, start:]
            loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += (pred[:, word].argmax(-1) == target[:, word]).sum().item()
        log(
            f"  instruction epoch {epoch + 1}/{epochs}: loss {total / len(seqs):.4f}, "
            f"answer-word accuracy {correct / len(seqs):.3f}"
        )
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(True)
    return model.eval()


# -- evaluation --------------------------------------------------------------------
@torch.inference_mode()
def evaluate(model, processor, images, y, train, test, probe_accuracy, batch_size=150):
    """The paper's measures on the test split, and a last-token probe."""
    tok = processor.tokenizer
    prompt = prompt_text(processor)
    prefix = prompt + " " + ANSWER.split("{}")[0].strip()
    name_ids = tok.convert_tokens_to_ids(list(DIGIT_NAMES))
    answers, probabilistic, last, mean = [], [], [], []
    for i in range(0, len(images), batch_size):
        chunk = list(images[i : i + batch_size])
        inputs = processor(
            images=chunk, text=[prompt] * len(chunk), return_tensors="pt", padding=True
        )
        out = model(**inputs, output_hidden_states=True, use_cache=False)
        last.append(out.hidden_states[-1][:, -1])
        mean.append(out.hidden_states[-1].mean(1))  # one prompt: no padding
        gen = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        answers += tok.batch_decode(
            gen[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        pre = processor(
            images=chunk, text=[prefix] * len(chunk), return_tensors="pt", padding=True
        )
        probabilistic.append(
            model(**pre, use_cache=False).logits[:, -1, name_ids].argmax(-1)
        )
    correct = np.array(
        [DIGIT_NAMES[c] in a.lower() for a, c in zip(answers, y, strict=True)]
    )
    probabilistic = torch.cat(probabilistic).numpy()
    results = {
        "llava open-ended, answer names the digit (test)": float(correct[test].mean()),
        "llava P(class name | 'The photo features a') argmax (test)": float(
            (probabilistic[test] == y[test]).mean()
        ),
        "llava linear probe, last layer, last token (test)": probe_accuracy(
            torch.cat(last).numpy(), y, train, test
        ),
        "llava linear probe, last layer, mean token (test)": probe_accuracy(
            torch.cat(mean).numpy(), y, train, test
        ),
    }
    per_class = {
        DIGIT_NAMES[c]: float(correct[test][y[test] == c].mean()) for c in range(10)
    }
    return results, per_class, answers


# -- saving the training text ------------------------------------------------------------
def save_training_text(path, processor, train_index, rendering, y, words, info):
    """Write what the model read: both stages' text and the schedule."""
    path = Path(path)
    with gzip.GzipFile(path / "pretraining_text.txt.gz", "wb", mtime=0) as f:
        f.write("".join(s + "\n" for s in text_corpus()).encode())
    prompt = prompt_text(processor)
    lines = [
        json.dumps(
            {
                "digit_index": int(i),
                "rendering": int(r),
                "label": DIGIT_NAMES[c],
                "text": f"{prompt} {ANSWER.format(w)}",
            }
        )
        for i, r, c, w in zip(train_index, rendering, y.tolist(), words, strict=True)
    ]
    with gzip.GzipFile(path / "instruction_text.jsonl.gz", "wb", mtime=0) as f:
        f.write("".join(line + "\n" for line in lines).encode())
    (path / "schedule.json").write_text(json.dumps(info, indent=1) + "\n")
