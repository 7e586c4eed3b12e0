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
