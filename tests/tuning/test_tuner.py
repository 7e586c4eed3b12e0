"""VLMClassificationTuner: training behaviour, resume, sklearn behaviour, the registry.

Fits run on tiny random-init models (or the shipped tiny LLaVA), a few steps each,
one torch thread.
"""

import hashlib
import math
import pickle
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from skvlm import VLMEmbeddingTransformer
from skvlm.callbacks import StopTraining
from skvlm.classifiers import VLMGenerativeClassifier
from skvlm.datasets import load_digit_images
from skvlm.models import load_adapter
from skvlm.testing import GENERATIVE_FAMILIES, random_images
from skvlm.tuning import VLMClassificationTuner
from skvlm.tuning._batches import answer_ids, generation_batch, generation_loss_sum
from skvlm.tuning._data import split_validation, template_prompt
from skvlm.tuning._loop import epoch_order, lr_factor

# PaliGemma's processor calls numpy in a way numpy 2 warns about (not ours).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)

FAMILIES = sorted(GENERATIVE_FAMILIES)
Y4 = np.array(["cat", "dog", "cat", "dog"])


def _tuner(model, tmp_path, **kwargs):
    params = dict(
        learning_rate_init=1e-2,
        max_iter=2,
        batch_size=4,
        lora__r=4,
        lora__lora_dropout=0.0,
        output_dir=tmp_path,
        random_state=0,
        device="cpu",
        verbose=0,
    )
    params.update(kwargs)
    return VLMClassificationTuner(model, **params)


def _weights(path):
    return load_file(f"{path}/model.safetensors")


def _digest(net):
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def llava(family_paths):
    return family_paths("llava")


@pytest.fixture(scope="module")
def images():
    return random_images(4, seed=2)


# -- every family ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_its_loss_falls_and_the_tuned_model_loads(
    family, family_paths, images, tmp_path
):
    # One batch of the same four images each epoch, no dropout: the loss falls as
    # it learns. (Random-init models with a frozen random head cannot go far:
    # the final norm bounds their logits. The shipped tiny LLaVA's tests go further.)
    tuner = _tuner(family_paths(family), tmp_path, max_iter=6)
    tuner.fit(images, Y4)
    losses = [h["loss"] for h in tuner.history_]
    assert len(losses) == tuner.n_steps_ == 6
    assert losses[-1] < losses[0] - 0.1
    assert min(losses) == pytest.approx(min(losses[-2:]))
    assert tuner.predict(images).shape == (4,)
    # the tuned directory is a model for every skvlm tool
    path = tuner.model_path_
    clf = VLMGenerativeClassifier(path, device="cpu").fit(images, Y4)
    assert clf.predict_proba(images).shape == (4, 2)
    features = VLMEmbeddingTransformer(path, stage="language", device="cpu")
    assert features.fit_transform(images).shape[0] == 4


def test_a_model_that_cannot_answer_is_refused(tmp_path, images, clip_path):
    with pytest.raises(ValueError, match="generative VLMs"):
        _tuner(str(clip_path), tmp_path).fit(images, Y4)


# -- what trains -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("train", "train_vision", "changed"),
    [
        ("projector", False, {"projector"}),
        ("lora", False, {"projector", "lora"}),
        ("full", False, {"projector", "lora", "other_language"}),
        ("projector", True, {"projector", "vision"}),
    ],
)
def test_only_the_chosen_parts_change(
    train, train_vision, changed, llava, images, tmp_path
):
    tuner = _tuner(llava, tmp_path, train=train, train_vision=train_vision)
    tuner.fit(images, Y4)
    base, tuned = _weights(llava), _weights(tuner.model_path_)
    assert base.keys() == tuned.keys()
    moved = set()
    for name in base:
        if torch.equal(base[name], tuned[name]):
            continue
        if "multi_modal_projector" in name:
            moved.add("projector")
        elif "vision_tower" in name:
            moved.add("vision")
        elif re.search(r"layers\.\d+\.(self_attn|mlp)\.[a-z]+_proj\.weight$", name):
            moved.add("lora")  # LoRA merges into these
        else:
            moved.add("other_language")  # norms, embeddings, head
    assert moved == changed


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_weights_train_under_autocast(dtype, llava, images, tmp_path):
    # The GPU recipe's code path (a bf16 model, float32 trained weights, autocast;
    # float16 with loss scaling), on the CPU.
    tuner = _tuner(llava, tmp_path, dtype=dtype, max_iter=4)
    tuner.fit(images, Y4)
    losses = [h["loss"] for h in tuner.history_]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] - 0.05
    saved = {t.dtype for t in _weights(tuner.model_path_).values()}
    assert saved == {getattr(torch, dtype)}


# -- the optimisation --------------------------------------------------------------
def test_accumulation_takes_the_steps_of_the_whole_batch(llava, tmp_path):
    images, y = random_images(8, seed=3), np.array(["cat", "dog"] * 4)
    one = _tuner(llava, tmp_path / "a", batch_size=8).fit(images, y)
    two = _tuner(
        llava, tmp_path / "b", batch_size=4, gradient_accumulation_steps=2
    ).fit(images, y)
    assert one.n_steps_ == two.n_steps_ == 2
    for a, b in zip(one.history_, two.history_, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    first, second = _weights(one.model_path_), _weights(two.model_path_)
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_changes_nothing_but_memory(llava, images, tmp_path):
    plain = _tuner(llava, tmp_path / "a").fit(images, Y4)
    checkpointed = _tuner(llava, tmp_path / "b", gradient_checkpointing=True)
    checkpointed.fit(images, Y4)
    for a, b in zip(plain.history_, checkpointed.history_, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_learning_rate_warms_up_then_decays_on_a_cosine(llava, tmp_path):
    images, y = random_images(8, seed=3), np.array(["cat", "dog"] * 4)
    tuner = _tuner(
        llava, tmp_path, batch_size=2, max_iter=3, scheduler__warmup_ratio=0.25
    )
    tuner.fit(images, y)
    # Hugging Face's schedule (the paper's trainer), as the reference
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    schedule = get_cosine_schedule_with_warmup(optimizer, 3, 12)
    expected = []
    for _ in range(12):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert [h["lr"] for h in tuner.history_] == pytest.approx(expected, abs=1e-12)
    assert [lr_factor(s, 12, 3) for s in range(12)] == pytest.approx(
        [e / 1e-2 for e in expected]
    )


def test_shuffling_is_seeded_and_mixes_instruction_rows_at_the_ratio():
    a = epoch_order(10, 4, 5, seed=0, epoch=0)
    assert a.tolist() == epoch_order(10, 4, 5, seed=0, epoch=0).tolist()
    assert a.tolist() != epoch_order(10, 4, 5, seed=0, epoch=1).tolist()
    assert a.tolist() != epoch_order(10, 4, 5, seed=1, epoch=0).tolist()
    assert sorted(a[a < 10].tolist()) == list(range(10))  # each image once
    assert (a >= 10).sum() == 5  # mix_ratio 0.5 of 10 rows, drawn from the 4
    every = epoch_order(10, 4, None, seed=0, epoch=0)
    assert sorted(every.tolist()) == list(range(14))


def test_instruction_data_is_learnt_alongside_the_classes(tmp_path):
    digits = load_digit_images(n_class=2, n_per_class=8)
    others = load_digit_images(n_class=4, n_per_class=2).images[4:]
    instruction = [(image, "Is it red?", "yes") for image in others]
    tuner = _tuner(
        "skvlm/tiny-llava",
        tmp_path,
        class_names=["zero", "one"],
        instruction_data=instruction,
        mix_ratio=1.0,
        max_iter=12,
        learning_rate_init=3e-3,
        lora__r=32,
        lora__lora_alpha=64,
    )
    tuner.fit(digits.images, digits.target)
    assert tuner.n_steps_ == 12 * 8  # (16 images + 16 mixed rows) / 4 per step
    ask = VLMGenerativeClassifier(
        tuner.model_path_,
        strategy="open_ended",
        prompt="Is it red?",
        max_new_tokens=8,
        device="cpu",
    ).fit(digits.images, digits.target)
    assert ask.generate(others) == ["yes"] * 4  # never said before training
    # and it still names the classes when asked what the photo shows
    ask.set_params(prompt=None, class_names=["zero", "one"])
    assert (
        ask.fit(digits.images, digits.target).score(digits.images, digits.target) >= 0.9
    )


def test_early_stopping_keeps_the_best_validation(llava, tmp_path):
    images, y = random_images(12, seed=7), np.array(["cat", "dog"] * 6)
    tuner = _tuner(
        llava,
        tmp_path,
        batch_size=2,
        max_iter=20,
        learning_rate_init=5e-2,  # too large: the validation loss soon rises
        early_stopping=True,
        validation_fraction=0.34,
        n_iter_no_change=2,
        validation_every=2,
    )
    tuner.fit(images, y)
    checked = [h for h in tuner.history_ if "validation_loss" in h]
    assert tuner.n_steps_ < 20 * 4  # stopped early (8 training rows, 4 steps/epoch)
    best = min(checked, key=lambda h: h["validation_loss"])
    assert tuner.best_step_ == best["step"]
    assert checked[-1]["step"] == tuner.n_steps_
    later = [h["validation_loss"] for h in checked if h["step"] > best["step"]]
    assert len(later) == 2 and min(later) >= best["validation_loss"]
    # the saved model is the best one: its validation loss, computed here
    classes, y_index = np.unique(y, return_inverse=True)
    _, val = split_validation(y_index, 0.34, seed=0)
    adapter = load_adapter(tuner.model_path_, device="cpu")
    prompt = adapter.format_prompt(None)
    answers = answer_ids(
        adapter.processor.tokenizer,
        [f"The photo features a {classes[k]}." for k in y_index[val]],
    )
    batch = generation_batch(
        adapter, [images[i] for i in val], [prompt] * len(val), answers
    )
    with torch.no_grad():
        loss, n_tokens = generation_loss_sum(adapter.model, batch)
    assert float(loss) / n_tokens == pytest.approx(best["validation_loss"], rel=1e-4)


# -- checkpoints and resume --------------------------------------------------------
class _Crash(Exception):
    pass


def test_a_crashed_run_resumes_to_the_weights_of_an_uninterrupted_one(llava, tmp_path):
    images, y = random_images(10, seed=8), np.array(["cat", "dog"] * 5)
    common = dict(
        batch_size=2,
        max_iter=3,
        lora__lora_dropout=0.3,  # the dropout generator must resume too
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=10,
        checkpoint_every=3,
    )
    whole = _tuner(llava, tmp_path / "whole", **common).fit(images, y)

    class Crash:
        def on_step_end(self, estimator, *, step, **info):
            if step == 7:
                raise _Crash

    with pytest.raises(_Crash):
        _tuner(llava, tmp_path / "crashed", callbacks=[Crash()], **common).fit(
            images, y
        )
    run_dir = next((tmp_path / "crashed").iterdir())
    assert (run_dir / "checkpoint.pt").exists()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["state"]
    assert state["step"] == 6  # the last checkpoint before the crash
    resumed = _tuner(llava, tmp_path / "crashed", **common).fit(images, y)
    assert resumed.model_path_ == str(run_dir)
    assert resumed.n_steps_ == whole.n_steps_ == 12
    assert resumed.history_ == whole.history_
    a, b = _weights(whole.model_path_), _weights(resumed.model_path_)
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit for bit
    assert not (run_dir / "checkpoint.pt").exists()  # a finished run keeps none


def test_a_finished_run_is_reused_and_resume_false_retrains(llava, images, tmp_path):
    first = _tuner(llava, tmp_path).fit(images, Y4)
    stamp = (tmp_path / first.model_path_ / "model.safetensors").stat().st_mtime_ns
    again = _tuner(llava, tmp_path).fit(images, Y4)
    assert again.model_path_ == first.model_path_
    assert again.history_ == first.history_
    assert (
        tmp_path / again.model_path_ / "model.safetensors"
    ).stat().st_mtime_ns == stamp
    fresh = _tuner(llava, tmp_path, resume=False).fit(images, Y4)
    assert fresh.model_path_ == first.model_path_  # same run, trained again
    assert (
        tmp_path / fresh.model_path_ / "model.safetensors"
    ).stat().st_mtime_ns != stamp
    # another seed, other data or another parameter is another run
    paths = {
        _tuner(llava, tmp_path, random_state=1).fit(images, Y4).model_path_,
        _tuner(llava, tmp_path).fit(images[::-1], Y4).model_path_,
        _tuner(llava, tmp_path, lora__r=2).fit(images, Y4).model_path_,
    }
    assert first.model_path_ not in paths and len(paths) == 3


# -- sklearn behaviour and the shared registry ---------------------------------------
def test_sklearn_parameter_conventions():
    name = "VLMClassificationTuner"
    check_parameters_default_constructible(name, VLMClassificationTuner())
    check_no_attributes_set_in_init(name, VLMClassificationTuner())
    check_get_params_invariance(name, VLMClassificationTuner())
    check_set_params(name, VLMClassificationTuner())


def test_clone_and_pickle_carry_no_weights(llava, images, tmp_path):
    tuner = _tuner(llava, tmp_path, objective="cross_entropy", optimizer__head_lr=0.1)
    tuner.fit(images, Y4)
    copy = clone(tuner)
    assert copy.get_params() == tuner.get_params()
    assert not hasattr(copy, "model_path_")
    expected = tuner.decision_function(images)
    blob = pickle.dumps(tuner)
    weights = sum(t.numel() for t in _weights(tuner.model_path_).values())
    assert len(blob) < weights  # far smaller than the float32 weights' bytes / 4
    loaded = pickle.loads(blob)
    np.testing.assert_allclose(loaded.decision_function(images), expected)
    assert loaded.predict(images).tolist() == tuner.predict(images).tolist()


def _score_checking_the_base(base_digest, base_path):
    """A scorer that fails if the registry's base model changed (in any process)."""

    def score(estimator, X, y):
        net = load_adapter(base_path, device="cpu").model
        assert _digest(net) == base_digest, "the shared base model was modified"
        return estimator.score(X, y)

    return score


@pytest.mark.slow
def test_grid_search_trains_every_fold_from_the_untouched_base(llava, tmp_path):
    images, y = random_images(8, seed=9), np.array(["cat", "dog"] * 4)
    before = _digest(load_adapter(llava, device="cpu").model)
    results = {}
    for n_jobs in (1, 2):
        out = tmp_path / f"jobs{n_jobs}"
        search = GridSearchCV(
            _tuner(llava, out, max_iter=1),
            {"lora__r": [2, 4]},
            cv=KFold(2),
            scoring=_score_checking_the_base(before, llava),
            n_jobs=n_jobs,
            error_score="raise",
        )
        search.fit(images, y)
        # the registry's base model, bit for bit
        assert _digest(load_adapter(llava, device="cpu").model) == before
        # each fold's run in its own directory (candidates x folds, and the refit)
        assert len([p for p in out.iterdir() if p.name.startswith("run-")]) == 5
        results[n_jobs] = search.cv_results_["split0_test_score"].tolist() + (
            search.cv_results_["split1_test_score"].tolist()
        )
    # folds trained one per process, or one after another in this one: the same
    assert results[1] == results[2]


def test_strategy_head_needs_the_cross_entropy_objective(llava, images, tmp_path):
    with pytest.raises(ValueError, match="strategy='head'"):
        _tuner(llava, tmp_path, strategy="head").fit(images, Y4)
    with pytest.raises(ValueError, match="exactly one"):
        _tuner(llava, tmp_path, answer_template="The photo features a").fit(images, Y4)
    with pytest.raises(ValueError, match="lora__target_modules"):
        _tuner(llava, tmp_path, lora__target_modules=["fc9"]).fit(images, Y4)
    with pytest.raises(ValueError, match="come from the tuner's own parameters"):
        _tuner(llava, tmp_path, classifier__prompt_template="paper").fit(images, Y4)
    with pytest.raises(ValueError, match=r"\['max_tokens'\] are not"):
        _tuner(llava, tmp_path, classifier__max_tokens=4).fit(images, Y4)
    with pytest.raises(ValueError, match="optimizer__momentum: not an argument"):
        _tuner(llava, tmp_path, optimizer__momentum=0.9).fit(images, Y4)
    with pytest.raises(ValueError, match="lora__rank: not an argument"):
        _tuner(llava, tmp_path, lora__rank=4).fit(images, Y4)
    with pytest.raises(TypeError, match="unexpected parameters \\['lora_r'\\]"):
        _tuner(llava, tmp_path, lora_r=4).fit(images, Y4)


def test_predictions_go_through_the_generative_classifier(llava, images, tmp_path):
    tuner = _tuner(llava, tmp_path, classifier__calibration="prior")
    tuner.fit(images, Y4)
    same = VLMGenerativeClassifier(
        tuner.model_path_,
        answer_prefix="The photo features a",
        calibration="prior",
        device="cpu",
    ).fit(images, Y4)
    np.testing.assert_allclose(
        tuner.decision_function(images), same.decision_function(images)
    )
    np.testing.assert_allclose(tuner.predict_proba(images).sum(1), 1.0)
    # a predict-time parameter changed: the refit reuses the finished run
    path, history = tuner.model_path_, tuner.history_
    tuner.set_params(strategy="open_ended", classifier__max_new_tokens=4)
    tuner.fit(images, Y4)
    assert (tuner.model_path_, tuner.history_) == (path, history)
    assert tuner.classifier_.strategy == "open_ended"
    assert len(tuner.generate(images)) == 4


# -- callbacks ---------------------------------------------------------------------
class _Record:
    def __init__(self, stop_at=None):
        self.events, self.stop_at = [], stop_at

    def on_fit_begin(self, estimator, **info):
        self.events.append(("on_fit_begin", info))

    def on_step_end(self, estimator, **info):
        self.events.append(("on_step_end", info))
        if info["step"] == self.stop_at:
            raise StopTraining

    def on_epoch_end(self, estimator, **info):
        self.events.append(("on_epoch_end", info))

    def on_fit_end(self, estimator, **info):
        self.events.append(("on_fit_end", info))


def test_callbacks_see_every_step_and_epoch(llava, tmp_path):
    images, y = random_images(8, seed=3), np.array(["cat", "dog"] * 4)
    record = _Record()
    tuner = _tuner(llava, tmp_path, batch_size=2, callbacks=[record]).fit(images, y)
    names = [name for name, _ in record.events]
    epoch = ["on_step_end"] * 4 + ["on_epoch_end"]
    assert names == ["on_fit_begin", *epoch, *epoch, "on_fit_end"]
    assert record.events[0][1] == {"n_samples": 8}
    steps = [info for name, info in record.events if name == "on_step_end"]
    assert [s["step"] for s in steps] == list(range(1, 9))
    assert {s["n_steps"] for s in steps} == {8}
    assert [s["epoch"] for s in steps] == [1] * 4 + [2] * 4
    assert [s["loss"] for s in steps] == [h["loss"] for h in tuner.history_]
    assert [s["learning_rate"] for s in steps] == [h["lr"] for h in tuner.history_]
    epochs = [info for name, info in record.events if name == "on_epoch_end"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    losses = [h["loss"] for h in tuner.history_]
    assert epochs[1]["train_loss"] == pytest.approx(np.mean(losses[4:]))
    assert epochs[0]["valid_loss"] is None
    assert record.events[-1][1] == {"stopped_early": False}


def test_stop_training_from_a_callback_keeps_what_was_learnt(llava, tmp_path):
    images, y = random_images(8, seed=3), np.array(["cat", "dog"] * 4)
    record = _Record(stop_at=3)
    tuner = _tuner(llava, tmp_path, batch_size=2, callbacks=[record]).fit(images, y)
    assert tuner.n_steps_ == len(tuner.history_) == 3
    assert record.events[-1] == ("on_fit_end", {"stopped_early": True})
    assert tuner.predict(images).shape == (8,)  # a fitted, saved model
    base, tuned = _weights(llava), _weights(tuner.model_path_)
    assert any(not torch.equal(base[n], tuned[n]) for n in base)


def test_a_callback_without_event_methods_is_refused(llava, images, tmp_path):
    with pytest.raises(TypeError, match=r"callbacks\[0\]"):
        _tuner(llava, tmp_path, callbacks=[object()]).fit(images, Y4)


# -- the paper's recipe --------------------------------------------------------------
# LLaVA's conv_vicuna_v1 (``--version v1``), written out: system prompt, " USER: ",
# the image and question, " ASSISTANT:" (the answer follows after a space).
LLAVA_V1 = (
    "A chat between a curious user and an artificial intelligence assistant. The "
    "assistant gives helpful, detailed, and polite answers to the user's questions."
    " USER: <image>\nWhat type of object is in the photo? ASSISTANT:"
)


def test_paper_preset_trains_the_projector_alone_on_the_cosine_schedule(tmp_path):
    images = random_images(8, seed=5, sizes=[(48, 24), (24, 40)] * 4)
    y = np.array(["cat", "dog"] * 4)
    record = _Record()
    tuner = VLMClassificationTuner.paper_preset(
        "skvlm/tiny-llava",
        {"cat": "cat", "dog": "dog"},
        max_iter=3,
        batch_size=2,
        output_dir=tmp_path,
        random_state=0,
        device="cpu",
        verbose=0,
        callbacks=[record],
    ).fit(images, y)
    assert template_prompt(tuner.prompt_template, tuner.prompt) == LLAVA_V1
    assert (tuner.train, tuner.answer_template, tuner.image_aspect) == (
        "projector",
        "{}",
        "pad",
    )
    # every weight but the projector's: bit for bit the base model's
    base = _weights(load_adapter("skvlm/tiny-llava", device="cpu").model.name_or_path)
    tuned = _weights(tuner.model_path_)
    assert base.keys() == tuned.keys()
    moved = {n for n in base if not torch.equal(base[n], tuned[n])}
    projector = {n for n in base if "multi_modal_projector" in n}
    assert moved == projector
    # warm-up over ceil(0.03 * 12) = 1 step, then a cosine to 0, peak 2e-5
    total, warmup, peak = 12, 1, 2e-5
    expected = [
        peak * k / warmup
        if k < warmup
        else peak * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))
        for k in range(total)
    ]
    steps = [info for name, info in record.events if name == "on_step_end"]
    assert [s["learning_rate"] for s in steps] == pytest.approx(expected, abs=1e-15)
    # no weight decay, no LoRA: the paper's finetune.sh
    assert tuner.get_params()["optimizer__weight_decay"] == 0.0
    # LoRA is one argument away
    lora = VLMClassificationTuner.paper_preset("skvlm/tiny-llava", train="lora")
    assert lora.train == "lora" and lora.learning_rate_init == 2e-5


def test_image_aspect_pad_trains_and_predicts_on_padded_images(tmp_path):
    from transformers import AutoImageProcessor

    from skvlm._inputs import pad_to_square

    images = random_images(4, seed=6, sizes=[(48, 24), (24, 40), (32, 32), (40, 20)])
    path = load_adapter("skvlm/tiny-llava", device="cpu").model.name_or_path
    mean = AutoImageProcessor.from_pretrained(path).image_mean
    squares = [pad_to_square(image, mean) for image in images]
    padded = _tuner("skvlm/tiny-llava", tmp_path / "a", image_aspect="pad")
    padded.fit(images, Y4)
    native = _tuner("skvlm/tiny-llava", tmp_path / "b").fit(squares, Y4)
    a, b = _weights(padded.model_path_), _weights(native.model_path_)
    assert all(torch.equal(a[n], b[n]) for n in a)
    np.testing.assert_array_equal(
        padded.decision_function(images), native.decision_function(squares)
    )


# -- quantized bases (QLoRA) ---------------------------------------------------------
def test_quantization_needs_lora_and_bitsandbytes(llava, images, tmp_path):
    import importlib.util

    with pytest.raises(ValueError, match="Use train='lora' \\(QLoRA\\)"):
        _tuner(llava, tmp_path, quantization="4bit", train="projector").fit(images, Y4)
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ImportError, match="pip install bitsandbytes"):
            _tuner(llava, tmp_path, quantization="8bit").fit(images, Y4)
