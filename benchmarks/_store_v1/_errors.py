"""The warning and error a feature store raises."""


class FeatureStoreWarning(UserWarning):
    """A store entry was damaged or a write was skipped; features stay correct.

    Raised for a truncated, corrupt or misplaced entry file (the file is named;
    the entry is treated as missing and recomputed) and when ``max_bytes`` stops
    a write (the features are returned but not kept).
    """


class FeatureStoreError(OSError):
    """A feature store cannot do what was asked; the message says how to fix it.

    Raised when the disk is full (naming the file and the bytes needed), when
    the store's path is a file or a foreign directory, and when the directory
    holds a store format this skvlm does not read. It subclasses ``OSError``, so
    code that already handles I/O errors handles it too.
    """
