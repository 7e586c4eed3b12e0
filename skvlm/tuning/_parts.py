"""What trains in each family, and the trainable copy of a model.

A generative VLM has three parts the tuner distinguishes: the vision tower, the
projector (connector, merger or Q-Former) and the language model. ``train``
picks what is updated: LoRA adapters on the language model's linear layers plus
the whole projector (the paper's LoRA recipe), the projector alone, or every
weight of the language model and the projector; ``train_vision`` adds the
vision tower. Everything else stays frozen.

Training never touches the model the registry shares: it runs on a deep copy,
whose trainable parameters are kept in float32 (master weights) whatever the
dtype of the frozen ones.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Parts:
    """Module-name prefixes of a family's parts (names as in ``named_parameters``).

    Attributes
    ----------
    language : str or tuple of str
        The language model's decoder (its blocks sit under ``language.*layers.N``);
        a tuple where an encoder-decoder's two stacks sit under no one module
        (UDOP's ``encoder`` and ``decoder``).
    lm_head : str
        The output projection to the vocabulary (trained by ``train="full"``).
    projector : tuple of str
        Modules or parameters between the vision tower and the language model.
    vision : tuple of str
        The vision tower; projector names inside it are not counted as vision.
    blocks : tuple of str
        Names of the lists of the language model's blocks (``"layers"``;
        T5's ``"block"``).
    """

    language: str | tuple
    lm_head: str
    projector: tuple
    vision: tuple
    blocks: tuple


def _parts_of(traits):
    """The :class:`Parts` named by a family's traits (``skvlm.models.Traits``)."""
    return Parts(
        traits.language,
        traits.lm_head or "",  # "": none (matches no parameter)
        tuple(traits.projector or ()),
        (traits.vision,) if traits.vision else (),
        tuple(traits.language_blocks),
    )


def _language_prefixes(parts):
    language = parts.language
    return tuple(language) if isinstance(language, tuple) else (language,)


def _under(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def family_parts(adapter, quantized=False, train="lora"):
    """The :class:`Parts` of ``adapter``'s model, or an error saying why it cannot train.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
    quantized : bool, default=False
        Whether the tuner itself loaded the base quantized (QLoRA).
    train : {"lora", "projector", "full"}, default="lora"
        What will train: a family whose traits say it has no projector
        (``unsupported["tuner:projector"]``, images as codes of the word
        embeddings) trains with ``"lora"`` (LoRA on the language model alone)
        and ``"full"``, not with ``"projector"``.

    Returns
    -------
    parts : Parts
    """
    family = adapter.family
    traits = getattr(adapter, "traits", None)
    if traits is not None and "tuner" in traits.unsupported:
        raise ValueError(
            f"VLMClassificationTuner does not train {family} models yet: "
            f"{traits.unsupported['tuner']}. Use VLMGenerativeClassifier, or a "
            "probe on its features."
        )
    # the answer's logits, not the language stage's hidden states: a language
    # stage refused for its hidden states still trains
    refused = getattr(adapter, "unavailable", {})
    answers = "language" in adapter.stages or "language" in refused
    if not answers or traits is None or not traits.language:
        raise ValueError(
            f"VLMClassificationTuner fine-tunes generative VLMs that answer in text; "
            f"the model is a {family!r} model, which has no language model to answer "
            "with. Use a generative VLM, or train a probe on its features "
            "(LinearProbeClassifier)."
        )
    parts = _parts_of(traits)
    net = adapter.model
    is_quantized = getattr(net, "is_quantized", False) or getattr(
        net, "hf_quantizer", None
    )
    if is_quantized and not quantized:
        raise ValueError(
            "The model is loaded quantized (model_kwargs has a quantization_config); "
            "VLMClassificationTuner loads quantized bases itself: pass "
            "quantization='4bit' or '8bit' (with train='lora') instead."
        )
    names = {n for n, _ in net.named_parameters()}
    modules = {n for n, _ in net.named_modules()}
    none = traits.unsupported.get("tuner:projector") if traits is not None else None
    if not parts.projector and none and train == "projector":
        raise ValueError(
            f"{family}: train='projector' has nothing to train: {none}. Use "
            "train='lora' (LoRA on the language model) or train='full'."
        )
    if not parts.projector and not none:
        raise ValueError(
            f"{family}: skvlm found no projector module in {type(net).__name__} "
            "(train='lora' and 'projector' train it). Declare it with "
            "Traits(projector=(...,)) in skvlm.models.TRAITS, or report the model id."
        )
    for prefix in (*_language_prefixes(parts), *parts.projector[:1]):
        if prefix not in modules and not any(_under(n, [prefix]) for n in names):
            raise ValueError(
                f"{type(net).__name__} has no module {prefix!r}, where skvlm expects "
                f"the {family} family's "
                f"{'projector' if prefix in parts.projector else 'language model'}; "
                "this checkpoint's layout is not one VLMClassificationTuner knows. "
                "Please report it with the model id."
            )
    return parts


def parameter_groups(net, parts):
    """``{"language", "lm_head", "projector", "vision", "other"}`` -> named parameters."""
    groups = {k: {} for k in ("language", "lm_head", "projector", "vision", "other")}
    seen = set()
    for name, param in net.named_parameters():
        if id(param) in seen:  # tied weights (Gemma's head is its embedding)
            continue
        seen.add(id(param))
        if _under(name, parts.projector):
            key = "projector"
        elif _under(name, [parts.lm_head]):
            key = "lm_head"
        elif _under(name, parts.vision):
            # before language: Phi-4-multimodal's tower sits inside its LM module
            key = "vision"
        elif _under(name, _language_prefixes(parts)):
            key = "language"
        else:
            key = "other"
        groups[key][name] = param
    return groups


def _is_linear(module):
    """A linear layer peft adapts: ``nn.Linear``, or transformers' ``Conv1D``
    (GPT-2's linear layers, weights stored transposed)."""
    from transformers import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D))


def _transposed(net, pattern):
    """Whether every layer ``pattern`` matches is a ``Conv1D`` (peft then
    needs ``fan_in_fan_out=True``)."""
    from transformers import Conv1D

    chosen = [m for n, m in net.named_modules() if re.fullmatch(pattern, n)]
    return bool(chosen) and all(isinstance(m, Conv1D) for m in chosen)


def lora_target_regex(net, parts, target_modules=None):
    """The peft ``target_modules`` regex: linear layers of the language model's blocks.

    Parameters
    ----------
    net : torch.nn.Module
    parts : Parts
    target_modules : list of str or None
        Leaf names (``"q_proj"``, ``"v_proj"``...) to adapt; None takes every
        linear layer inside the language model's blocks (an encoder-decoder's:
        its encoder's and its decoder's).

    Returns
    -------
    pattern : str
        Matches full module names, as peft's ``re.fullmatch`` reads it.
    """
    lists = "|".join(map(re.escape, parts.blocks))
    # a tower inside the language model (T5Gemma 2's encoder) is not adapted
    outside = "".join(rf"(?!{re.escape(v)}\.)" for v in parts.vision)
    block = re.compile(
        outside
        + "(?:"
        + "|".join(map(re.escape, _language_prefixes(parts)))
        + rf")\.(?:.*\.)?(?:{lists})\.\d+\."
    )
    leaves = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in net.named_modules()
            if _is_linear(module) and block.match(name)
        }
    )
    if not leaves:
        raise ValueError(
            f"Found no linear layer in the decoder blocks of {parts.language!r}; "
            "LoRA has nothing to adapt. Use train='projector' or 'full'."
        )
    if target_modules is not None:
        unknown = sorted(set(target_modules) - set(leaves))
        if unknown:
            raise ValueError(
                f"lora__target_modules names {unknown}, which are not linear layers of "
                f"the language model's blocks; available: {leaves}."
            )
        leaves = sorted(set(target_modules))
    return block.pattern + r"(?:.*\.)?(?:" + "|".join(map(re.escape, leaves)) + r")"


@dataclass
class Trainable:
    """A trainable copy of a model.

    Attributes
    ----------
    net : torch.nn.Module
        The copied HF model (with LoRA layers injected, for ``train="lora"``).
    runner : torch.nn.Module
        What the forward pass calls: the peft model, or ``net``.
    params : dict
        ``{name: parameter}`` of everything that trains, named as in ``runner``.
    projector : set of str
        The names in ``params`` that belong to the projector.
    dtypes : dict
        ``{name in net: dtype}``: what each trained base parameter was before it
        became float32.
    """

    net: torch.nn.Module
    runner: torch.nn.Module
    params: dict
    projector: set
    dtypes: dict


def make_trainable(
    adapter,
    parts,
    *,
    train,
    train_vision=False,
    lora=None,
):
    """A copy of ``adapter.model`` whose chosen parts train.

    The copy shares every frozen parameter with the registry's model (no second
    copy of the weights in memory) and owns copies of the parameters that train;
    LoRA adds its adapters to the copy's modules. Nothing writes to a shared
    parameter: the frozen ones are only read, and :func:`trained_state`
    computes merged weights out of place.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
        Its model's weights are never modified.
    parts : Parts
    train : {"lora", "projector", "full"}
    train_vision : bool
    lora : dict, default=None
        ``peft.LoraConfig`` arguments (``train="lora"`` only);
        ``target_modules`` holds leaf names of the language model's linear
        layers (None: all of them).

    Returns
    -------
    trainable : Trainable
    """
    base = adapter.model
    groups = parameter_groups(base, parts)
    chosen = dict(groups["projector"])
    if train == "full":
        chosen.update(groups["language"])
        chosen.update(groups["lm_head"])
    if train_vision:
        chosen.update(groups["vision"])
    copied = {id(p) for p in chosen.values()}
    shared = {id(p): p for p in base.parameters() if id(p) not in copied}
    net = copy.deepcopy(base, memo=dict(shared))  # memo: shared ones map to themselves
    for param in shared.values():
        param.requires_grad_(False)  # a flag only: inference never reads it
    by_name = dict(net.named_parameters())
    dtypes = {}
    for name in chosen:
        param = by_name[name]
        dtypes[name] = param.dtype
        if param.dtype != torch.float32:
            param.data = param.data.float()  # float32 master weights (a copy)
        param.requires_grad_(True)
    runner = net
    if train == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ImportError(
                "train='lora' needs peft: pip install 'skvlm[tuning]' (or pip "
                "install peft); train='projector' and 'full' work without it."
            ) from None

        kwargs = {"r": 8, "lora_alpha": 16, "bias": "none", **(lora or {})}
        targets = kwargs.get("target_modules")
        kwargs["target_modules"] = lora_target_regex(
            net, parts, targets if targets is not None else adapter.traits.lora_targets
        )
        if _transposed(net, kwargs["target_modules"]):  # GPT-2's Conv1D layers
            kwargs.setdefault("fan_in_fan_out", True)
        config = LoraConfig(**kwargs)
        text = net.config.get_text_config()
        if not hasattr(net.config, "tie_word_embeddings") and hasattr(
            text, "tie_word_embeddings"
        ):
            # peft asks the model for its input embeddings unless the top
            # config says the weights are untied: PP-FormulaNet says so in its
            # text config only, and its model has no get_input_embeddings
            net.config.tie_word_embeddings = text.tie_word_embeddings
        with warnings.catch_warnings():
            # peft reads a property transformers has deprecated (harmless)
            warnings.filterwarnings("ignore", category=FutureWarning)
            runner = get_peft_model(net, config)  # freezes all but the adapters
        for name in chosen:
            by_name[name].requires_grad_(True)
    projector_ids = {id(by_name[n]) for n in groups["projector"]}
    params, projector = {}, set()
    for name, param in runner.named_parameters():
        if param.requires_grad:
            params[name] = param
            if id(param) in projector_ids:
                projector.add(name)
    return Trainable(net, runner, params, projector, dtypes)


def base_weight(layer):
    """A linear layer's weight as a float tensor (de-quantized when bitsandbytes
    holds it in 4 or 8 bits)."""
    weight = layer.weight
    if weight.dtype in (torch.uint8, torch.int8) or hasattr(weight, "quant_state"):
        from peft.utils.integrations import dequantize_module_weight

        return dequantize_module_weight(layer)
    return weight


def trained_state(trainable, train):
    """The trained model and its state dict: LoRA merged, trained weights in their
    original dtypes, every tensor on the CPU.

    Merged weights are computed out of place (``W + scale * B @ A``, in
    float32, then cast to ``W``'s dtype), so the frozen weights the copy shares
    with the registry's model are never written.

    Returns
    -------
    net : torch.nn.Module
        The HF model (LoRA layers removed) whose ``save_pretrained`` writes it.
    state : dict
        Its state dict, merged.
    """
    merged = {}
    net = trainable.net
    if train == "lora":
        from peft.tuners.lora import LoraLayer

        prefix = "base_model.model."
        with torch.no_grad():
            for name, module in trainable.runner.named_modules():
                if isinstance(module, LoraLayer):
                    weight = base_weight(module.base_layer)
                    delta = module.get_delta_weight(module.active_adapters[0])
                    value = (weight.float() + delta.float()).to(weight.dtype)
                    merged[name.removeprefix(prefix) + ".weight"] = value.cpu()
        net = trainable.runner.unload()  # the copy's modules, without LoRA
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    state.update(merged)
    for name, dtype in trainable.dtypes.items():
        state[name] = state[name].to(dtype)
    return net, state
