"""Checks every claim of families.md against the tiny models (run: python docs/dev/verify_families.py).

For each family: vision-tower hooks vs the tower's own hidden_states, projector hook vs
get_image_features' pooler_output and vs LM layer 0 at image positions, LM decoder-layer
hooks vs output_hidden_states, hook signatures, and padding-side invariance.
"""

import sys
import tempfile

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from skvlm.testing._generative import GENERATIVE_FAMILIES, load_processor

PROMPT = "What type of object is in this photo?"
NESTED = {"idefics3", "smolvlm"}
BLIP = {"blip2", "instructblip"}


def parts(family, m):
    """(vision tower, its block list, post-norm or None, projector, LM, LM layers, LM norm)."""
    if family in ("llava", "llava_next"):
        t = m.model.vision_tower
        return (
            t,
            t.encoder.layers,
            t.post_layernorm,
            m.model.multi_modal_projector,
            m.model.language_model,
            m.model.language_model.layers,
            m.model.language_model.norm,
        )
    if family.startswith("qwen"):
        v = m.model.visual
        return (
            v,
            v.blocks,
            None,
            v.merger,
            m.model.language_model,
            m.model.language_model.layers,
            m.model.language_model.norm,
        )
    if family == "paligemma":
        t = m.model.vision_tower
        return (
            t,
            t.encoder.layers,
            t.post_layernorm,
            m.model.multi_modal_projector,
            m.model.language_model,
            m.model.language_model.layers,
            m.model.language_model.norm,
        )
    if family in NESTED:
        v = m.model.vision_model
        return (
            v,
            v.encoder.layers,
            v.post_layernorm,
            m.model.connector,
            m.model.text_model,
            m.model.text_model.layers,
            m.model.text_model.norm,
        )
    lm = m.language_model
    base = lm.model.decoder if family == "blip2" else lm.model
    norm = base.final_layer_norm if family == "blip2" else base.norm
    return (
        m.vision_model,
        m.vision_model.encoder.layers,
        m.vision_model.post_layernorm,
        m.language_projection,
        base,
        base.layers,
        norm,
    )


def image_features(family, m, inp):
    """get_image_features(..., output_hidden_states=True) with the family's inputs."""
    kw = dict(pixel_values=inp["pixel_values"], output_hidden_states=True)
    if family == "llava_next":
        kw["image_sizes"] = inp["image_sizes"]
    if family.startswith("qwen"):
        kw["image_grid_thw"] = inp["image_grid_thw"]
    if family in NESTED:
        kw["pixel_attention_mask"] = inp["pixel_attention_mask"]
    if family == "instructblip":
        kw["qformer_input_ids"] = inp["qformer_input_ids"]
        kw["qformer_attention_mask"] = inp["qformer_attention_mask"]
    owner = m if family in BLIP else m.model
    return owner.get_image_features(**kw)


def make_inputs(family, proc, images, prompts, padding_side=None):
    texts = []
    for p in prompts:
        if proc.chat_template:
            msgs = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": p}],
                }
            ]
            texts.append(proc.apply_chat_template(msgs, add_generation_prompt=True))
        else:
            texts.append(p)
    ims = [[i] for i in images] if family in NESTED else images
    kw = {} if padding_side is None else {"padding_side": padding_side}
    inp = proc(images=ims, text=texts, padding=True, return_tensors="pt", **kw)
    inp.pop("labels", None)
    return inp


class Recorder:
    def __init__(self):
        self.out, self.pre, self.handles = {}, {}, []

    def hook(self, name, module):
        def fwd(mod, args, output):
            self.out[name] = output

        def pre(mod, args, kwargs):
            self.pre[name] = (args, kwargs)

        self.handles += [
            module.register_forward_hook(fwd),
            module.register_forward_pre_hook(pre, with_kwargs=True),
        ]

    def remove(self):
        for h in self.handles:
            h.remove()


def close(a, b):
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def check(family, images):
    path = GENERATIVE_FAMILIES[family](tempfile.mkdtemp())
    proc = load_processor(path)
    m = AutoModelForImageTextToText.from_pretrained(path).eval()
    tower, vlayers, vpost, projector, lm, layers, norm = parts(family, m)
    inp = make_inputs(family, proc, images, [PROMPT, PROMPT])
    rep = {
        "inputs": {k: tuple(v.shape) for k, v in inp.items()},
        "padding_side": proc.tokenizer.padding_side,
    }
    rec = Recorder()
    for i, block in enumerate(vlayers):
        rec.hook(f"v{i}", block)
    for i, layer in enumerate(layers):
        rec.hook(f"t{i}", layer)
    rec.hook("proj", projector)
    with torch.inference_mode():
        feats = image_features(family, m, inp)
        vout = dict(rec.out)
        vpre = dict(rec.pre)
        out = m(**inp, output_hidden_states=True, use_cache=False)
    rec.remove()
    # ---- vision tower
    vhs = feats.hidden_states
    n_v = len(vlayers)
    rep["vision_hs_len"] = len(vhs)
    rep["vision_hs0_is_layer0_input"] = (
        close(vpre["v0"][0][0], vhs[0]) if vpre["v0"][0] else "kwarg"
    )
    outs = [vout[f"v{i}"] for i in range(n_v)]
    rep["vision_layer_output_type"] = type(outs[0]).__name__
    outs = [o[0] if isinstance(o, tuple) else o for o in outs]
    rep["vision_hs_k_is_block_k_output"] = all(
        close(outs[i], vhs[i + 1]) for i in range(n_v)
    )
    rep["vision_last_hidden_state_is_hs_last"] = close(feats.last_hidden_state, vhs[-1])
    if vpost is not None:
        rep["vision_last_hidden_state_is_postnorm(hs_last)"] = (
            close(feats.last_hidden_state, vpost(vhs[-1]))
            if vhs[-1].dim() == 3
            else None
        )
    rep["vision_hs_shape"] = tuple(vhs[0].shape)
    fwd_img = getattr(out, "image_outputs", None)
    if fwd_img is not None and getattr(fwd_img, "hidden_states", None) is not None:
        rep["forward_returns_vision_hs"] = [
            h is not None for h in fwd_img.hidden_states
        ]
    else:
        rep["forward_returns_vision_hs"] = False
    # ---- projector
    proj_out = vout["proj"]
    rep["projector_output_shape"] = tuple(proj_out.shape)
    pooled = feats.pooler_output
    if isinstance(pooled, (list, tuple)):
        rep["pooler_output_per_image"] = [tuple(p.shape) for p in pooled]
        pooled_cat = torch.cat([p.reshape(-1, p.shape[-1]) for p in pooled])
    else:
        rep["pooler_output_shape"] = tuple(pooled.shape)
        pooled_cat = pooled.reshape(-1, pooled.shape[-1])
    # ---- language model
    lm_out = out.language_model_outputs if family in BLIP else out
    hs = lm_out.hidden_states
    rep["lm_hs_len"] = len(hs)
    image_token_id = (
        getattr(m.config, "image_token_id", None) or m.config.image_token_index
    )
    mask = inp["input_ids"] == image_token_id
    rep["image_token_id"] = int(image_token_id)
    rep["image_tokens_per_row"] = mask.sum(-1).tolist()
    rep["lm_hs0_at_image_tokens_is_pooler_output"] = close(hs[0][mask], pooled_cat)
    if family == "blip2":
        rep["lm_hs0_at_image_tokens_is_projector_output"] = close(
            hs[0][mask], proj_out.reshape(-1, proj_out.shape[-1])
        )
    args, kwargs = rec.pre["t0"]
    rep["lm_layer_hidden_states_passed"] = (
        "positional" if args else f"kwarg {sorted(kwargs)}"
    )
    rep["lm_layer_call_kwargs"] = sorted(kwargs)
    rep["lm_hs0_is_layer0_input"] = close(args[0], hs[0]) if args else None
    louts = [rec.out[f"t{i}"] for i in range(len(layers))]
    rep["lm_layer_output_type"] = type(louts[0]).__name__
    louts = [o[0] if isinstance(o, tuple) else o for o in louts]
    L = len(layers)
    rep["lm_hs_k_is_layer_k_output(k<L)"] = all(
        close(louts[i], hs[i + 1]) for i in range(L - 1)
    )
    rep["lm_hs_L_is_norm(layer_L_output)"] = close(norm(louts[-1]), hs[L])
    rep["lm_hs_L_is_raw_layer_L_output"] = close(louts[-1], hs[L])
    # Inputs of layer k+1 vs output of layer k (Qwen3-VL DeepStack adds visual features in between)
    rep["layer_k+1_input_equals_hs_k"] = [
        close(rec.pre[f"t{i}"][0][0], hs[i]) for i in range(L)
    ]
    # ---- padding-side invariance: two prompts of different lengths vs one-by-one
    prompts = [PROMPT, "describe the image"]
    res = {}
    for side in ("left", "right"):
        worst = 0.0
        with torch.inference_mode():
            b = make_inputs(family, proc, images, prompts, padding_side=side)
            hb = m(**b, output_hidden_states=True, use_cache=False)
            hb = (hb.language_model_outputs if family in BLIP else hb).hidden_states[-1]
            for r in range(2):
                s = make_inputs(family, proc, images[r : r + 1], prompts[r : r + 1])
                hsr = m(**s, output_hidden_states=True, use_cache=False)
                hsr = (
                    hsr.language_model_outputs if family in BLIP else hsr
                ).hidden_states[-1][0]
                valid = b["attention_mask"][r].bool()
                worst = max(worst, (hb[r][valid] - hsr).abs().max().item())
        res[side] = f"{worst:.1e}"
    rep["padding_max_abs_diff_vs_single"] = res
    return rep, m, proc, inp, feats, out


@torch.inference_mode()
def extras(family, m, proc, inp, feats, out, images):
    """Family-specific claims: packing, permutations, DeepStack, masks, extra inputs."""
    rep = {}
    hs = (out.language_model_outputs if family in BLIP else out).hidden_states
    specials = set(proc.tokenizer.all_special_ids)
    rep["special_tokens_in_row0"] = proc.tokenizer.convert_ids_to_tokens(
        sorted({int(i) for i in inp["input_ids"][0] if int(i) in specials})
    )
    if family == "llava_next":
        from transformers.models.llava_next.modeling_llava_next import (
            image_size_to_num_patches,
        )

        n = [
            image_size_to_num_patches(
                s.tolist(),
                m.config.image_grid_pinpoints,
                m.config.vision_config.image_size,
            )
            for s in inp["image_sizes"]
        ]
        rep["image_num_patches (tiles per image incl. base)"] = n
        rep["vision_hs_rows == sum(tiles)"] = feats.hidden_states[0].shape[0] == sum(n)
    if family.startswith("qwen"):
        v = m.model.visual
        thw = inp["image_grid_thw"]
        rep["patches_per_image (t*h*w)"] = thw.prod(-1).tolist()
        rep["merged_tokens_per_image"] = (thw.prod(-1) // 4).tolist()
        last = feats.hidden_states[-1]
        if family == "qwen2_5_vl":
            from transformers.vision_utils import get_vision_window_index

            win, _ = get_vision_window_index(
                thw, v.spatial_merge_size, v.window_size, v.patch_size
            )
            rep["window_index"] = win.tolist()
            unit = v.spatial_merge_unit

            def undo(x):
                return x.reshape(-1, unit, x.shape[-1])[torch.argsort(win)].reshape(
                    -1, x.shape[-1]
                )

            emb = v.patch_embed(inp["pixel_values"])
            rep["undo(hs[0]) == patch_embed(pixel_values) (processor order)"] = close(
                undo(feats.hidden_states[0]), emb
            )
            rep["hs[0] (raw) == patch_embed (i.e. not permuted)"] = close(
                feats.hidden_states[0], emb
            )
            rep["merger(hs[-1])[argsort(window_index)] == pooler_output"] = close(
                v.merger(last)[torch.argsort(win)], torch.cat(feats.pooler_output)
            )
            rep["merger(undo(hs[-1])) == pooler_output"] = close(
                v.merger(undo(last)), torch.cat(feats.pooler_output)
            )
        else:
            rep["merger(hs[-1]) == pooler_output"] = close(
                v.merger(last), torch.cat(feats.pooler_output)
            )
        if family == "qwen2_vl":
            rep["hs[0] == patch_embed(pixel_values)"] = close(
                feats.hidden_states[0], v.patch_embed(inp["pixel_values"])
            )
        if family == "qwen3_vl":
            ds = feats.deepstack_features
            rep["deepstack_visual_indexes"] = list(v.deepstack_visual_indexes)
            rep["deepstack[0] == deepstack_merger_list[0](vision hs[idx+1])"] = close(
                torch.cat(ds[0]),
                v.deepstack_merger_list[0](
                    feats.hidden_states[v.deepstack_visual_indexes[0] + 1]
                ),
            )
            mask = inp["input_ids"] == m.config.image_token_id
            # input of LM layer 1 = hs[1] with deepstack added at image positions
            rec = Recorder()
            rec.hook("t1", m.model.language_model.layers[1])
            m(**inp, use_cache=False)
            rec.remove()
            x1 = rec.pre["t1"][0][0]
            rep["LM layer1 input == hs[1] + deepstack[0] at image tokens"] = close(
                x1[mask], hs[1][mask] + torch.cat(ds[0])
            )
            rep["LM layer1 input == hs[1] at text tokens"] = close(
                x1[~mask], hs[1][~mask]
            )
        rep["mm_token_type_ids == (input_ids == image_token_id)"] = bool(
            (
                (inp["mm_token_type_ids"] == 1)
                == (inp["input_ids"] == m.config.image_token_id)
            ).all()
        )
        no_mm = {k: v for k, v in inp.items() if k != "mm_token_type_ids"}
        try:
            o2 = m(**no_mm, output_hidden_states=True, use_cache=False)
            rep["forward without mm_token_type_ids: max diff hs[-1]"] = (
                f"{(o2.hidden_states[-1] - hs[-1]).abs().max().item():.1e}"
            )
        except Exception as e:
            rep["forward without mm_token_type_ids"] = (
                f"{type(e).__name__}: {str(e)[:120]}"
            )
    if family == "paligemma":
        no_tt = {k: v for k, v in inp.items() if k != "token_type_ids"}
        o2 = m(**no_tt, output_hidden_states=True, use_cache=False)
        rep["forward without token_type_ids: max diff hs[-1]"] = (
            f"{(o2.hidden_states[-1] - hs[-1]).abs().max().item():.1e}"
        )
        # does the prefix attend bidirectionally? perturb the last valid token, look at token 0
        ids = inp["input_ids"].clone()
        last = int(inp["attention_mask"][0].sum()) - 1
        ids[0, last] = proc.tokenizer.convert_tokens_to_ids("cat")
        o3 = m(**{**inp, "input_ids": ids}, output_hidden_states=True, use_cache=False)
        rep[
            "prefix is bidirectional (token 0 changes when last token changes)"
        ] = not close(o3.hidden_states[1][0, 0], hs[1][0, 0])
    if family in NESTED:
        pam = inp["pixel_attention_mask"]
        real = (inp["pixel_values"].flatten(2) != 0).any(-1)
        rep["real tiles per row"] = real.sum(-1).tolist()
        ps = m.config.vision_config.patch_size
        patch_mask = pam[real].unfold(1, ps, ps).unfold(2, ps, ps).sum((-1, -2)) > 0
        rep["valid patches per real tile"] = patch_mask.flatten(1).sum(-1).tolist()
        rep["connector output tokens per tile"] = m.config.scale_factor and int(
            16 / m.config.scale_factor**2
        )
    if family == "blip2":
        dec = m.language_model.model.decoder
        mask = inp["input_ids"] == m.config.image_token_id
        pos = dec.embed_positions(inp["attention_mask"], 0)
        rep[
            "LM hs[0] == language_projection(query_output) + OPT position embeddings"
        ] = close((hs[0] - pos)[mask], feats.pooler_output.reshape(-1, 32))
        rep["qformer last_hidden_state shape"] = tuple(
            out.qformer_outputs.last_hidden_state.shape
        )
    if family == "instructblip":
        q = out.qformer_outputs.last_hidden_state
        rep["qformer last_hidden_state shape (queries + instruction tokens)"] = tuple(
            q.shape
        )
        rep["language_projection(qformer_out[:, :num_query]) == pooler_output"] = close(
            m.language_projection(q[:, : m.config.num_query_tokens]),
            feats.pooler_output,
        )
        # LM left-padded, Q-Former right-padded
        prompts = [PROMPT, "describe the image"]
        b = make_inputs(family, proc, images, prompts, padding_side="left")
        qb = proc.qformer_tokenizer(
            prompts, padding=True, padding_side="right", return_tensors="pt"
        )
        b["qformer_input_ids"], b["qformer_attention_mask"] = (
            qb["input_ids"],
            qb["attention_mask"],
        )
        hb = m(
            **b, output_hidden_states=True, use_cache=False
        ).language_model_outputs.hidden_states[-1]
        worst = 0.0
        for r in range(2):
            s1 = make_inputs(family, proc, images[r : r + 1], prompts[r : r + 1])
            h1 = m(
                **s1, output_hidden_states=True, use_cache=False
            ).language_model_outputs.hidden_states[-1][0]
            worst = max(
                worst, (hb[r][b["attention_mask"][r].bool()] - h1).abs().max().item()
            )
        rep["LM left + Q-Former right padding: max diff vs single"] = f"{worst:.1e}"
    return rep


def main(families):
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(32, 32), (40, 64)]
    ]
    for family in families:
        rep, *rest = check(family, images)
        rep.update(extras(family, *rest, images))
        print(f"== {family}")
        for k, v in rep.items():
            print(f"  {k}: {v}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(GENERATIVE_FAMILIES))
