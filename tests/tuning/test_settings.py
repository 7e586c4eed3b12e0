"""The tuner's parameters: routed prefixes, old names, GridSearchCV over them."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_set_params,
)

from skvlm.testing import random_images
from skvlm.tuning import VLMClassificationTuner
from skvlm.tuning._settings import resolve


def test_routed_parameters_are_parameters():
    tuner = VLMClassificationTuner(lora__r=16, optimizer__weight_decay=0.1)
    params = tuner.get_params()
    assert params["lora__r"] == 16 and params["optimizer__weight_decay"] == 0.1
    assert "lora__lora_alpha" not in params  # not given: the tuner's default
    tuner.set_params(lora__r=4, scheduler__warmup_ratio=0.1, max_iter=5)
    assert (tuner.lora__r, tuner.scheduler__warmup_ratio, tuner.max_iter) == (
        4,
        0.1,
        5,
    )
    copy = clone(tuner)
    assert copy.get_params() == tuner.get_params()
    assert "lora__r=4" in repr(copy)
    name = "VLMClassificationTuner"
    # (check_no_attributes_set_in_init reads the signature only: it passes on
    # the default tuner, in test_tuner.py, and cannot see routed parameters)
    for check in (check_get_params_invariance, check_set_params):
        check(name, VLMClassificationTuner(lora__r=16, accelerator__cpu=True))


def test_routed_values_reach_their_targets():
    settings, classifier = resolve(
        VLMClassificationTuner(
            lora__r=16,
            lora__use_rslora=True,  # any LoraConfig argument
            optimizer__betas=(0.9, 0.95),
            optimizer__projector_lr=2e-5,
            scheduler__warmup_ratio=0.1,
            classifier__max_new_tokens=4,
        ).get_params()
    )
    assert settings.lora == {
        "r": 16,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "target_modules": None,
        "use_rslora": True,
    }
    assert settings.optimizer == {"weight_decay": 0.0, "betas": (0.9, 0.95)}
    assert settings.projector_learning_rate == 2e-5
    assert settings.learning_rate == settings.head_learning_rate == 2e-4
    assert settings.warmup_ratio == 0.1 and settings.max_grad_norm == 1.0
    assert classifier == {"max_new_tokens": 4}


def test_bad_routed_names_are_refused_with_the_fix():
    tuner = VLMClassificationTuner(lr=0.1)  # sklearn: __init__ checks nothing
    assert tuner.get_params()["lr"] == 0.1  # kept, so clone carries the mistake
    with pytest.raises(TypeError, match=r"unexpected parameters \['lr'\]"):
        tuner.fit(["no image is read"], [0])  # refused before any model work
    with pytest.raises(ValueError, match="scheduler__name: not an argument"):
        resolve(VLMClassificationTuner(scheduler__name="linear").get_params())
    with pytest.raises(ValueError, match="accelerator__cpu is set by the tuner"):
        resolve(VLMClassificationTuner(accelerator__cpu=True).get_params())


OLD_AND_NEW = [
    ({"learning_rate": 0.1}, {"learning_rate_init": 0.1}),
    ({"max_epochs": 7}, {"max_iter": 7}),
    ({"progress": True}, {"verbose": 1}),
    ({"progress": False}, {"verbose": 0}),
    ({"lora_rank": 4}, {"lora__r": 4}),
    ({"lora_alpha": 8}, {"lora__lora_alpha": 8}),
    ({"lora_dropout": 0.2}, {"lora__lora_dropout": 0.2}),
    ({"lora_target_modules": ["q_proj"]}, {"lora__target_modules": ["q_proj"]}),
    ({"weight_decay": 0.1}, {"optimizer__weight_decay": 0.1}),
    ({"max_grad_norm": None}, {"optimizer__max_grad_norm": None}),
    ({"projector_learning_rate": 1e-5}, {"optimizer__projector_lr": 1e-5}),
    ({"head_learning_rate": 1e-2}, {"optimizer__head_lr": 1e-2}),
    ({"warmup_ratio": 0.2}, {"scheduler__warmup_ratio": 0.2}),
    ({"classifier_params": {"max_new_tokens": 3}}, {"classifier__max_new_tokens": 3}),
]


@pytest.mark.parametrize(("old", "new"), OLD_AND_NEW)
def test_old_names_warn_and_mean_the_new_ones(old, new):
    tuner = VLMClassificationTuner(**old)
    assert clone(tuner).get_params() == tuner.get_params()  # kept by clone
    with pytest.warns(FutureWarning, match=f"'{next(iter(old))}' is deprecated"):
        got = resolve(tuner.get_params())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = resolve(VLMClassificationTuner(**new).get_params())
    assert got == expected


def test_grid_search_over_lora_rank(tmp_path):
    images, y = random_images(4, seed=9), np.array(["cat", "dog"] * 2)
    tuner = VLMClassificationTuner(
        "skvlm/tiny-llava",
        max_iter=1,
        batch_size=2,
        output_dir=tmp_path,
        random_state=0,
        device="cpu",
        verbose=0,
    )
    seen = []

    def score(estimator, X, y):
        seen.append((estimator.get_params()["lora__r"], estimator.n_trainable_params_))
        return estimator.score(X, y)

    search = GridSearchCV(
        tuner,
        {"lora__r": [2, 4]},
        cv=KFold(2),
        scoring=score,
        error_score="raise",
    )
    search.fit(images, y)
    assert [p["lora__r"] for p in search.cv_results_["params"]] == [2, 4]
    assert search.best_estimator_.lora__r in (2, 4)
    # the rank reached peft: LoRA parameters grow by r per adapted layer
    by_rank = {}
    for rank, n in seen:
        by_rank.setdefault(rank, set()).add(n)
    assert all(len(v) == 1 for v in by_rank.values())
    (n2,), (n4,) = by_rank[2], by_rank[4]
    projector = n2 - (n4 - n2)  # LoRA count at r=2 equals the increase 2 -> 4
    assert projector > 0 and n4 - projector == 2 * (n2 - projector)
