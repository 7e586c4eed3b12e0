"""probe_layers and ProbeReport: numbers equal a direct cross_val_score, files, errors."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skvlm import FeatureStore, VLMEmbeddingTransformer
from skvlm._inputs import image_key
from skvlm.classifiers import LinearProbeCV
from skvlm.datasets import load_digit_images
from skvlm.probing import ProbeReport, probe_layers
from skvlm.testing import make_tiny_llava


@pytest.fixture(scope="module")
def digits():
    data = load_digit_images(n_class=3, n_per_class=6, variation=0.3)
    return data.images, data.target


def _probe():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def _fast_probe():
    # Closed-form: keeps the many-site tests fast (lbfgs is the slow part).
    return make_pipeline(StandardScaler(), RidgeClassifier())


def _vlm(path, **params):
    return VLMEmbeddingTransformer(path, **params)


def _site(results, stage, layer, pooling):
    r = results
    return r[
        (r.param_stage == stage)
        & (r.param_layer == layer)
        & (r.param_pooling == pooling)
    ]


def _splits(row, n):
    return row[[f"split{k}_test_score" for k in range(n)]].to_numpy()[0]


@pytest.fixture(scope="module")
def report(clip_path, digits):
    X, y = digits
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    return probe_layers(_vlm(clip_path), X, y, cv=cv, probe=_fast_probe())


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
        row = _site(report.results, stage, layer, pooling)
        assert len(row) == 1
        np.testing.assert_allclose(_splits(row, 3), direct, atol=1e-12)
        assert row["mean_test_score"].item() == pytest.approx(direct.mean())
        assert row["std_test_score"].item() == pytest.approx(direct.std())
        checked += 1
    assert checked == 4


def test_every_site_of_every_stage_is_in_the_table(report):
    # The default stages are all the model's stages, as for `skvlm probe`.
    r = report.results
    # tiny CLIP: 4 vision entries x (cls, mean, max) + pooler at the last; projector.
    assert len(r) == 4 * 3 + 1 + 1
    assert list(r.columns[:7]) == [
        "param_stage",
        "param_layer",
        "param_pooling",
        "n_features",
        "mean_test_score",
        "std_test_score",
        "rank_test_score",
    ]
    assert {"split0_test_score", "split2_test_score", "mean_fit_time"} <= set(r)
    assert (r["mean_fit_time"] > 0).all()
    best = r.loc[r["mean_test_score"].idxmax()]
    assert report.best_params_ == {
        "stage": best["param_stage"],
        "layer": int(best["param_layer"]),
        "pooling": best["param_pooling"],
    }
    top = r.loc[r["rank_test_score"] == 1, "mean_test_score"]
    assert top.max() == r["mean_test_score"].max()
    assert report.meta["n_samples"] == 18 and report.meta["chance"] == pytest.approx(
        1 / 3
    )


def test_int_cv_with_random_state_uses_shuffled_stratified_folds(clip_path, digits):
    X, y = digits
    got = probe_layers(
        _vlm(clip_path),
        X,
        y,
        stages="vision",
        layers=[-1],
        poolings="cls",
        probe=_probe(),
        cv=3,
        random_state=1,
    )
    folds = StratifiedKFold(3, shuffle=True, random_state=1)
    vlm = VLMEmbeddingTransformer(clip_path, layer=-1, pooling="cls")
    direct = cross_val_score(make_pipeline(vlm, _probe()), X, y, cv=folds)
    np.testing.assert_allclose(got.results.filter(like="split").to_numpy()[0], direct)


def test_custom_probe_and_scorer(clip_path, digits):
    X, y = digits
    cv = StratifiedKFold(3)
    got = probe_layers(
        _vlm(clip_path),
        X,
        y,
        stages="vision",
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
    probe_layers(_vlm(clip_path, cache=store), X, y, cv=2, probe=_fast_probe())
    keys = sorted(image_key(im) for im in X)
    assert sorted(forward_log.read()) == sorted(keys * 2)  # vision, projector
    store = FeatureStore.open(store)
    probe_layers(_vlm(clip_path, cache=store), X, y, cv=2, probe=_fast_probe())
    assert len(forward_log.read()) == 2 * len(X)  # the rerun read the store only


def test_layers_and_poolings_per_stage(clip_path, digits):
    X, y = digits
    got = probe_layers(
        _vlm(clip_path),
        X,
        y,
        stages=["vision", "projector"],
        layers={"vision": [-1, 0, -1], "projector": "all"},
        poolings={"vision": ["mean", "pooler"], "projector": "all"},
        probe=_fast_probe(),
        cv=2,
    )
    sites = got.results[["param_stage", "param_layer", "param_pooling"]]
    sites = sites.to_numpy().tolist()
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
    columns = ["param_layer", "mean_test_score"]
    pd.testing.assert_frame_equal(back[columns], report.results[columns])
    payload = json.loads(paths["json"].read_text())
    assert payload["best"] == report.best_params_
    assert len(payload["results"]) == len(report.results)
    assert payload["meta"]["model"] == report.meta["model"]
    fig = report.plot()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["vision", "projector"]
    assert "*" in report.to_text() and "ProbeReport(14 candidates" in repr(report)


def test_report_from_a_hand_made_table():
    results = pd.DataFrame(
        {
            "param_stage": ["language"] * 3,
            "param_layer": [0, 1, 2],
            "param_pooling": ["last", "last", "last"],
            "mean_test_score": [0.2, 0.9, 0.9],
            "std_test_score": [0.0, 0.1, 0.05],
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
            r"pooling\(s\) \['last'\] exist at no probed layer .* vision: \['cls'",
        ),
        (
            {"poolings": {"vision": ["last"], "projector": "all"}},
            r"pooling\(s\) \['last'\] .* stage 'vision' .* available there: \['cls'",
        ),
        ({"layers": {"projector": "all"}}, r"dict without the stage 'vision'"),
        ({"scoring": "not_a_scorer"}, r"scoring"),
        ({"layers": []}, r"empty"),
    ],
)
def test_errors_name_the_problem(clip_path, digits, kwargs, match):
    X, y = digits
    with pytest.raises(ValueError, match=match):
        probe_layers(_vlm(clip_path), X, y, cv=2, **kwargs)


def test_y_must_match_X(clip_path, digits):
    X, y = digits
    with pytest.raises(ValueError, match=r"X has 18 images, y has shape \(17,\)"):
        probe_layers(_vlm(clip_path), X, y[:-1])


def test_estimator_probe_is_not_modified(clip_path, digits):
    X, y = digits
    probe = _probe()
    before = clone(probe).get_params()
    probe_layers(_vlm(clip_path), X, y, layers=[0], poolings="max", probe=probe, cv=2)
    assert not hasattr(probe[-1], "coef_")
    assert probe.get_params().keys() == before.keys()


def test_sites_in_parallel_give_the_same_table(clip_path, digits):
    X, y = digits
    kwargs = dict(layers=[0, -1], poolings="mean", cv=2, probe=_fast_probe())
    serial = probe_layers(_vlm(clip_path), X, y, **kwargs).results
    parallel = probe_layers(_vlm(clip_path), X, y, n_jobs=2, **kwargs).results
    columns = [
        "param_stage",
        "param_layer",
        "param_pooling",
        "mean_test_score",
        "split0_test_score",
        "split1_test_score",
    ]
    pd.testing.assert_frame_equal(parallel[columns], serial[columns])


# -- the batched default probe, LinearProbeCV ------------------------------------------
def test_default_probe_equals_a_scaler_and_logistic_regression(clip_path, digits):
    X, y = digits
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    got = probe_layers(
        _vlm(clip_path),
        X,
        y,
        stages="vision",
        layers=[1, -1],
        poolings="mean",
        probe=LinearProbeCV(Cs=[1.0], tol=1e-8, max_iter=2000),
        cv=cv,
    )
    for layer in (1, 3):
        vlm = VLMEmbeddingTransformer(clip_path, layer=layer, pooling="mean")
        pipe = make_pipeline(vlm, StandardScaler(), LogisticRegression(tol=1e-8))
        direct = cross_val_score(pipe, X, y, cv=cv)
        row = _site(got.results, "vision", layer, "mean")
        np.testing.assert_allclose(_splits(row, 3), direct)


def test_a_swept_C_gives_grid_search_cv_results(clip_path, digits):
    X, y = digits
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    Cs = [0.01, 1.0, 100.0]
    got = probe_layers(
        _vlm(clip_path),
        X,
        y,
        stages="vision",
        layers=[2],
        poolings="cls",
        probe=LinearProbeCV(Cs=Cs, tol=1e-8, max_iter=3000),
        cv=cv,
    )
    pipe = make_pipeline(
        VLMEmbeddingTransformer(clip_path, layer=2, pooling="cls"),
        StandardScaler(),
        LogisticRegression(tol=1e-8, max_iter=3000),
    )
    search = GridSearchCV(pipe, {"logisticregression__C": Cs}, cv=cv).fit(X, y)
    ours, theirs = got.cv_results_, search.cv_results_
    expected_keys = {k for k in theirs if not k.startswith("param_")} | {
        "param_stage",
        "param_layer",
        "param_pooling",
        "param_C",
    }
    assert expected_keys <= set(ours)
    for key in ["mean_test_score", "std_test_score", "rank_test_score"] + [
        f"split{k}_test_score" for k in range(3)
    ]:
        np.testing.assert_allclose(ours[key], theirs[key], err_msg=key)
    assert [p["C"] for p in ours["params"]] == Cs
    assert ours["params"][0] == {
        "stage": "vision",
        "layer": 2,
        "pooling": "cls",
        "C": 0.01,
    }


# -- control task, intervals, paired test ---------------------------------------------
@pytest.fixture(scope="module")
def stats_report(clip_path, digits):
    X, y = digits
    X = list(X) + [X[0], X[5]]  # two images twice: the same control label each
    y = np.concatenate([y, [y[0], y[5]]])
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    report = probe_layers(
        _vlm(clip_path),
        X,
        y,
        stages="vision",
        layers=[0, 3],
        poolings=["cls", "mean"],
        probe=_probe(),
        cv=cv,
        control="shuffled",
        ci=0.9,
        random_state=0,
    )
    return report, X, y, cv


def test_control_task_shuffles_labels_per_image(stats_report, clip_path):
    report, X, y, cv = stats_report
    control = report.control_labels_
    # A permutation of the labels over distinct images, the same for an image
    # given twice.
    distinct = slice(0, len(y) - 2)
    np.testing.assert_array_equal(np.sort(control[distinct]), np.sort(y[distinct]))
    assert control[-2] == control[0] and control[-1] == control[5]
    assert not np.array_equal(control, y)
    # Same probe, same folds, the control labels: the control_score column.
    row = _site(report.results, "vision", 3, "mean")
    vlm = VLMEmbeddingTransformer(clip_path, layer=3, pooling="mean")
    direct = cross_val_score(make_pipeline(vlm, _probe()), X, control, cv=cv)
    assert row["control_score"].item() == pytest.approx(direct.mean())
    assert row["selectivity"].item() == pytest.approx(
        row["mean_test_score"].item() - direct.mean()
    )


def test_interval_is_the_corrected_t_interval(stats_report):
    report, X, y, cv = stats_report
    folds = list(cv.split(np.zeros((len(y), 1)), y))
    n_train = np.mean([len(a) for a, _ in folds])
    n_test = np.mean([len(b) for _, b in folds])
    for _, row in report.results.iterrows():
        scores = row[[f"split{k}_test_score" for k in range(4)]].to_numpy(float)
        half = stats.t.ppf(0.95, 3) * math.sqrt(
            (1 / 4 + n_test / n_train) * np.var(scores, ddof=1)
        )
        assert row["score_ci_low"] == pytest.approx(scores.mean() - half)
        assert row["score_ci_high"] == pytest.approx(scores.mean() + half)


def test_compare_is_the_corrected_resampled_t_test(stats_report):
    report, X, y, cv = stats_report
    r = report.results
    a = _splits(_site(r, "vision", 3, "mean"), 4)
    b = _splits(_site(r, "vision", 0, "cls"), 4)
    # scipy's paired t statistic, with the variance corrected for the overlap
    # of the training folds (Nadeau and Bengio 2003).
    n_test = len(y) / 4
    n_train = len(y) - n_test
    plain = stats.ttest_rel(a, b).statistic
    expected = plain * math.sqrt((1 / 4) / (1 / 4 + n_test / n_train))
    got = report.compare(
        ("vision", 3, "mean"), {"stage": "vision", "layer": 0, "pooling": "cls"}
    )
    assert got.statistic == pytest.approx(expected)
    assert got.pvalue == pytest.approx(2 * stats.t.sf(abs(expected), 3))
    assert got.mean_difference == pytest.approx(np.mean(a - b))
    assert "Nadeau" in got.test
    with pytest.raises(ValueError, match=r"site \('vision', 9, 'cls'\) is not in"):
        report.compare(("vision", 9, "cls"), ("vision", 0, "cls"))


def test_plot_and_notebook_view_say_what_the_band_is(stats_report):
    report = stats_report[0]
    fig = report.plot()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("90% CI" in label and "Nadeau" in label for label in labels)
    assert any("control" in label for label in labels)
    controls = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert len(controls) >= 2  # one per pooling
    page = report._repr_html_()
    assert "data:image/png;base64," in page and report.meta["model"] in page
    assert "shaded band" in page and "control task" in page
    assert "<table" in page


# -- the estimator form, the old form, the poolings ---------------------------------------
def test_old_form_warns_and_gives_the_same_table(clip_path, digits):
    X, y = digits
    kwargs = dict(
        stages="vision", layers=[1], poolings="max", probe=_fast_probe(), cv=2
    )
    with pytest.warns(FutureWarning, match=r"VLMEmbeddingTransformer\(model"):
        old = probe_layers(clip_path, X, y, batch_size=4, **kwargs)
    new = probe_layers(_vlm(clip_path, batch_size=4), X, y, **kwargs)
    pd.testing.assert_frame_equal(
        old.results.filter(like="test_score"), new.results.filter(like="test_score")
    )
    with pytest.raises(TypeError, match="set them on it"):
        probe_layers(_vlm(clip_path), X, y, cache="somewhere", **kwargs)


def test_bad_arguments_fail_before_the_model_loads(digits):
    X, y = digits
    missing = VLMEmbeddingTransformer("/no/such/model")
    with pytest.raises(ValueError, match="control"):
        probe_layers(missing, X, y, control="random")
    with pytest.raises(ValueError, match="ci"):
        probe_layers(missing, X, y, ci=95)
    with pytest.raises(ValueError, match="y must be 1-D"):
        probe_layers(missing, X, y[:-1])


@pytest.fixture(scope="module")
def llava_path(tmp_path_factory):
    return make_tiny_llava(tmp_path_factory.mktemp("llava"))


def test_a_pooling_is_probed_wherever_it_exists(llava_path, digits):
    # image_mean exists at the language stage only: probing every stage with it
    # probes it there, and an unknown pooling lists where each one exists.
    X, y = digits
    got = probe_layers(
        _vlm(llava_path, batch_size=8),
        X,
        y,
        layers=[0, -1],
        poolings=["image_mean"],
        probe=_fast_probe(),
        cv=2,
    )
    assert set(got.results["param_stage"]) == {"language"}
    assert set(got.results["param_pooling"]) == {"image_mean"}
    with pytest.raises(ValueError, match=r"language: \[.*'image_mean'"):
        probe_layers(_vlm(llava_path), X, y, layers=[0], poolings=["no_such"], cv=2)
