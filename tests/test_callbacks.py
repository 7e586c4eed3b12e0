"""The callback protocol: validation, dispatch and the stop signal."""

import pytest

from skvlm.callbacks import Callback, StopTraining, check_callbacks, notify


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_step_end(self, estimator, **info):
        self.calls.append(("step", info["step"]))


class Stopper:
    def on_step_end(self, estimator, **info):
        raise StopTraining


def test_check_callbacks_accepts_none_one_and_many():
    recorder = Recorder()
    assert check_callbacks(None) == []
    assert check_callbacks(recorder) == [recorder]
    stopper = Stopper()  # no base class: any object with an event method
    assert check_callbacks((recorder, stopper)) == [recorder, stopper]


def test_check_callbacks_names_the_bad_item():
    with pytest.raises(TypeError, match=r"callbacks\[1\] = 3 has none"):
        check_callbacks([Recorder(), 3])


def test_stop_training_reaches_the_loop_after_every_callback_ran():
    before, after = Recorder(), Recorder()
    with pytest.raises(StopTraining):
        notify([before, Stopper(), after], "on_step_end", None, step=7)
    assert before.calls == after.calls == [("step", 7)]


def test_other_errors_propagate_at_once():
    class Broken:
        def on_batch_end(self, estimator, **info):
            raise RuntimeError("boom")

    after = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        notify([Broken(), after], "on_batch_end", None)


# -- the estimators that run a model tell their callbacks (issue 20) ----------------
class Events(Callback):
    """Records every event with its info."""

    def __init__(self):
        self.events = []

    def on_fit_begin(self, estimator, **info):
        self.events.append(("begin", estimator, info))

    def on_batch_end(self, estimator, **info):
        self.events.append(("batch", estimator, info))

    def on_fit_end(self, estimator, **info):
        self.events.append(("end", estimator, info))

    def batches(self):
        return [info for kind, _, info in self.events if kind == "batch"]


def _files(tmp_path, n):
    """``n`` image files and their store keys, computed here: sha1(b"file" + bytes)."""
    import hashlib

    from skvlm.testing import random_images

    paths = []
    for i, image in enumerate(random_images(n)):
        image.save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    keys = [hashlib.sha1(b"file" + open(p, "rb").read()).hexdigest() for p in paths]
    return paths, keys


def test_transformer_tells_fit_and_every_batch(clip_path, tmp_path):
    from skvlm import VLMEmbeddingTransformer

    images, expected = _files(tmp_path, 5)
    events = Events()
    vlm = VLMEmbeddingTransformer(
        clip_path, batch_size=2, verbose=0, callbacks=[events]
    )
    vlm.fit(images)
    assert [kind for kind, _, _ in events.events] == ["begin", "end"]
    assert events.events[0][2] == {"n_samples": 5}
    assert all(est is vlm for _, est, _ in events.events)
    vlm.transform(images)
    batches = events.batches()
    assert [(b["n_done"], b["n_total"]) for b in batches] == [(2, 5), (4, 5), (5, 5)]
    assert {b["stage"] for b in batches} == {"vision"}
    keys = [k for b in batches for k in b["keys"]]
    assert sorted(keys) == sorted(expected)


def test_zero_shot_and_generative_tell_batches_as_themselves(
    clip_path, llava_path, tmp_path
):
    from skvlm import CLIPZeroShotClassifier, VLMGenerativeClassifier

    (images, expected), y = _files(tmp_path, 3), [0, 1, 0]
    for clf in (
        CLIPZeroShotClassifier(clip_path, class_names=["cat", "dog"], verbose=0),
        VLMGenerativeClassifier(llava_path, class_names=["cat", "dog"], verbose=0),
    ):
        events = Events()
        clf.set_params(callbacks=[events]).fit(images, y)
        assert [kind for kind, _, _ in events.events] == ["begin", "end"]
        clf.predict(images)
        batches = events.batches()
        assert batches[-1]["n_done"] == batches[-1]["n_total"] == 3
        assert all(est is clf for _, est, _ in events.events)
        assert sorted(k for b in batches for k in b["keys"]) == sorted(expected)


def test_progress_bar_counts_images_and_closes(capsys):
    from skvlm.callbacks import ProgressBar

    bar = ProgressBar("demo")
    for done in (2, 4, 5):
        notify([bar], "on_batch_end", None, n_done=done, n_total=5, stage="vision")
    assert bar._bar is None  # closed at n_total
    err = capsys.readouterr().err
    assert "demo" in err and "5/5" in err
    quiet = ProgressBar(verbose=2)
    notify([quiet], "on_batch_end", None, n_done=1, n_total=2, stage="vision")
    assert "vision: 1/2 images" in capsys.readouterr().err
