"""probe_layers and ProbeReport: numbers equal a direct cross_val_score, files, errors."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skvlm import FeatureStore, VLMEmbeddingTransformer
from skvlm._inputs import image_key
from skvlm.datasets import load_digit_images
from skvlm.probing import ProbeReport, probe_layers


@pytest.fixture(scope="module")
def digits():
    data = load_digit_images(n_class=3, n_per_class=6, variation=0.3)
    return data.images, data.target


def _probe():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def _fast_probe():
    # Closed-form: keeps the many-site tests fast (lbfgs is the slow part).
    return make_pipeline(StandardScaler(), RidgeClassifier())


@pytest.fixture(scope="module")
def report(clip_path, digits):
    X, y = digits
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    return probe_layers(clip_path, X, y, stages="all", cv=cv, probe=_fast_probe())


def test_report_equals_cross_val_score_of_the_full_pipeline(report, clip_path, digits):
    X, y = digits
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    checked = 0
    for stage, layer, pooling in [
        ("vision", 0, "mean"),
        ("vision", 2, "cls"),
        ("vision", 3, "pooler"),
        ("projector", 0, "pooler"),
    ]:
        vlm = VLMEmbeddingTransformer(
            clip_path, stage=stage, layer=layer, pooling=pooling
        )
        pipe = make_pipeline(vlm, _fast_probe())
        direct = cross_val_score(pipe, X, y, cv=cv)
        r = report.results
        row = r[(r.stage == stage) & (r.layer == layer) & (r.pooling == pooling)]
        assert len(row) == 1
        got = row[[f"split{k}_score" for k in range(3)]].to_numpy()[0]
        np.testing.assert_allclose(got, direct, atol=1e-12)
        assert row["mean_score"].item() == pytest.approx(direct.mean())
        assert row["std_score"].item() == pytest.approx(direct.std())
        checked += 1
    assert checked == 4


def test_every_site_of_every_stage_is_in_the_table(report):
    r = report.results
    # tiny CLIP: 4 vision entries x (cls, mean, max) + pooler at the last; projector.
    assert len(r) == 4 * 3 + 1 + 1
    assert list(r.columns[:8]) == [
        "stage",
        "layer",
        "pooling",
        "n_features",
        "mean_score",
        "std_score",
        "fit_time",
        "score_time",
    ]
    assert {"split0_score", "split2_score", "rank"} <= set(r.columns)
    assert (r["fit_time"] > 0).all()
    best = r.loc[r["mean_score"].idxmax()]
    assert report.best_params_ == {
        "stage": best["stage"],
        "layer": int(best["layer"]),
        "pooling": best["pooling"],
    }
    assert r.loc[r["rank"] == 1, "mean_score"].max() == r["mean_score"].max()
    assert report.meta["n_samples"] == 18 and report.meta["chance"] == pytest.approx(
        1 / 3
    )


def test_int_cv_with_random_state_uses_shuffled_stratified_folds(clip_path, digits):
    X, y = digits
    got = probe_layers(
        clip_path, X, y, layers=[-1], poolings="cls", cv=3, random_state=1
    )
    folds = StratifiedKFold(3, shuffle=True, random_state=1)
    vlm = VLMEmbeddingTransformer(clip_path, layer=-1, pooling="cls")
    direct = cross_val_score(make_pipeline(vlm, _probe()), X, y, cv=folds)
    np.testing.assert_allclose(got.results.filter(like="split").to_numpy()[0], direct)


def test_custom_probe_and_scorer(clip_path, digits):
    X, y = digits
    cv = StratifiedKFold(3)
    got = probe_layers(
        clip_path,
        X,
        y,
        layers=[1],
        poolings=["mean"],
        probe=RidgeClassifier(),
        scoring="balanced_accuracy",
        cv=cv,
    )
    vlm = VLMEmbeddingTransformer(clip_path, layer=1, pooling="mean")
    direct = cross_val_score(
        make_pipeline(vlm, RidgeClassifier()), X, y, cv=cv, scoring="balanced_accuracy"
    )
    np.testing.assert_allclose(got.results.filter(like="split").to_numpy()[0], direct)
    assert got.meta["chance"] is None  # majority-class accuracy means nothing here


def test_one_forward_pass_per_image_per_stage(clip_path, digits, tmp_path, forward_log):
    X, y = digits
    store = tmp_path / "store"
    probe_layers(clip_path, X, y, stages="all", cv=2, cache=store, probe=_fast_probe())
    keys = sorted(image_key(im) for im in X)
    assert sorted(forward_log.read()) == sorted(keys * 2)  # vision, projector
    store = FeatureStore.open(store)
    probe_layers(clip_path, X, y, stages="all", cv=2, cache=store, probe=_fast_probe())
    assert len(forward_log.read()) == 2 * len(X)  # the rerun read the store only


def test_layers_and_poolings_per_stage(clip_path, digits):
    X, y = digits
    got = probe_layers(
        clip_path,
        X,
        y,
        stages=["vision", "projector"],
        layers={"vision": [-1, 0, -1], "projector": "all"},
        poolings={"vision": ["mean", "pooler"], "projector": "all"},
        probe=_fast_probe(),
        cv=2,
    )
    sites = got.results[["stage", "layer", "pooling"]].to_numpy().tolist()
    assert sites == [
        ["vision", 3, "mean"],
        ["vision", 3, "pooler"],
        ["vision", 0, "mean"],
        ["projector", 0, "pooler"],
    ]


def test_files_plot_html_csv_json(report, tmp_path):
    paths = report.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "probe_layers.png",
        "report.html",
        "results.csv",
        "results.json",
    ]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert page.count("<tr>") >= len(report.results)
    back = pd.read_csv(paths["csv"])
    pd.testing.assert_frame_equal(
        back[["layer", "mean_score"]], report.results[["layer", "mean_score"]]
    )
    payload = json.loads(paths["json"].read_text())
    assert payload["best"] == report.best_params_
    assert len(payload["results"]) == len(report.results)
    assert payload["meta"]["model"] == report.meta["model"]
    fig = report.plot()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["vision", "projector"]
    assert "*" in report.to_text() and "ProbeReport(14 sites" in repr(report)


def test_report_from_a_hand_made_table():
    results = pd.DataFrame(
        {
            "stage": ["language"] * 3,
            "layer": [0, 1, 2],
            "pooling": ["last", "last", "last"],
            "mean_score": [0.2, 0.9, 0.9],
            "std_score": [0.0, 0.1, 0.05],
        }
    )
    report = ProbeReport(results, {"model": "m", "chance": 0.1})
    assert report.best_params_ == {"stage": "language", "layer": 1, "pooling": "last"}
    assert len(report.plot().axes) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"stages": ["language"]},
            r"stage 'language' is not available .* \['vision', 'projector'\]",
        ),
        ({"layers": [7]}, r"layer=7 is out of range for stage 'vision'.*\[-4, 3\]"),
        (
            {"poolings": ["last"]},
            r"pooling\(s\) \['last'\] .* available there: \['cls'",
        ),
        ({"layers": {"projector": "all"}}, r"dict without the stage 'vision'"),
        ({"scoring": "not_a_scorer"}, r"scoring"),
        ({"layers": []}, r"empty"),
    ],
)
def test_errors_name_the_problem(clip_path, digits, kwargs, match):
    X, y = digits
    with pytest.raises(ValueError, match=match):
        probe_layers(clip_path, X, y, cv=2, **kwargs)


def test_y_must_match_X(clip_path, digits):
    X, y = digits
    with pytest.raises(ValueError, match=r"X has 18 images, y has shape \(17,\)"):
        probe_layers(clip_path, X, y[:-1])


def test_estimator_probe_is_not_modified(clip_path, digits):
    X, y = digits
    probe = _probe()
    before = clone(probe).get_params()
    probe_layers(clip_path, X, y, layers=[0], poolings="max", probe=probe, cv=2)
    assert not hasattr(probe[-1], "coef_")
    assert probe.get_params().keys() == before.keys()


def test_sites_in_parallel_give_the_same_table(clip_path, digits):
    X, y = digits
    kwargs = dict(layers=[0, -1], poolings="mean", cv=2, probe=_fast_probe())
    serial = probe_layers(clip_path, X, y, **kwargs).results
    parallel = probe_layers(clip_path, X, y, n_jobs=2, **kwargs).results
    columns = [
        "stage",
        "layer",
        "pooling",
        "mean_score",
        "split0_score",
        "split1_score",
    ]
    pd.testing.assert_frame_equal(parallel[columns], serial[columns])
