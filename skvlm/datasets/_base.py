"""What the loaders share: argument checks and the sklearn-style return value."""

import numbers

import pandas as pd
from sklearn.utils import Bunch


def _check_int(value, name, low, high=None):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int {bounds}; got {value!r}.")
    return int(value)


def _finish(items, target, names, descr, return_X_y, as_frame, *, key, captions=None):
    frame = None
    data = items
    if as_frame:
        columns = {"image": items}
        if captions is not None:
            columns["caption"] = captions
        else:
            columns["label"] = names[target]
        columns["target"] = target
        frame = pd.DataFrame(columns)
        data = frame[["image"]]
        target = frame["target"]
    if return_X_y:
        return data, target
    bunch = Bunch(
        data=data, target=target, target_names=names, frame=frame, DESCR=descr
    )
    bunch[key] = items
    if captions is not None:
        bunch["captions"] = captions
    return bunch
