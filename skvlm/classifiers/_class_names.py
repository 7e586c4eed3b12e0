"""Class labels to the text a VLM reads, with the checks every VLM classifier needs."""

from collections.abc import Mapping


def class_texts(class_names, classes):
    """The text of each class, checked: one name per label, no two alike.

    Parameters
    ----------
    class_names : mapping, sequence of str or None
        ``{label: name}``, names aligned with the sorted labels, or None for
        ``str(label)``.
    classes : ndarray
        The sorted labels.

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.classifiers._class_names import class_texts
    >>> class_texts({0: "cat", 1: "dog"}, np.array([0, 1]))
    ['cat', 'dog']
    """
    if class_names is None:
        names = [str(c) for c in classes]
    elif isinstance(class_names, Mapping):
        missing = [c for c in classes if c not in class_names]
        if missing:
            raise ValueError(
                f"class_names has no name for the labels {missing[:10]}; add them "
                "to the mapping."
            )
        names = [str(class_names[c]) for c in classes]
    else:
        names = [str(n) for n in class_names]
        if len(names) != len(classes):
            raise ValueError(
                f"class_names has {len(names)} names but y has {len(classes)} "
                "classes; pass one name per sorted label, or a dict {label: name}."
            )
    if not names:
        raise ValueError("There are no classes: y is empty.")
    seen = {}
    for label, name in zip(classes, names, strict=False):
        seen.setdefault(name.strip().lower(), []).append(label)
    duplicates = {name: labels for name, labels in seen.items() if len(labels) > 1}
    if duplicates:
        raise ValueError(
            f"Several classes share a name, so their prompts are identical: "
            f"{duplicates}. Give them distinct names (ImageNet's two 'crane' "
            "classes, for example, as 'crane (bird)' and 'crane (machine)')."
        )
    return names
