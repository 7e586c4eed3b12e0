"""Feature matrices read a block of rows at a time, never whole.

A probe trained on a million images' features cannot hold them in memory;
:func:`is_lazy` says when ``X`` is such a matrix (a numpy memmap, an HDF5 or
zarr dataset, a :class:`skvlm.store.StoreFeatures`...) and :class:`LazyArray`
reads its rows. Reads return fresh float arrays whatever the source, so what
a probe trains on is the same numbers an in-memory array would give.
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import scipy.sparse as sp


def memmap_buffer(X):
    """The ``mmap.mmap`` a numpy array's memory is mapped from, or None."""
    base = X
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, mmap.mmap) else None


def is_lazy(X):
    """Whether ``fit`` should read ``X`` a block of rows at a time.

    True for a 2-D numpy array mapped from a file (``np.memmap``,
    ``np.load(..., mmap_mode="r")``) and for any other object with a 2-D (or
    more) ``shape`` and indexing that is not an in-memory array: not a numpy array, list, sparse
    matrix, data frame (``__dataframe__``) or device array (``__dlpack__``:
    torch, CuPy, JAX). An h5py or zarr dataset, a dask array or a
    :class:`skvlm.store.StoreFeatures` qualifies.

    Examples
    --------
    >>> import numpy as np
    >>> from skvlm.classifiers._lazy_array import is_lazy
    >>> is_lazy(np.zeros((2, 3))), is_lazy([[0.0, 1.0]])
    (False, False)
    """
    if isinstance(X, np.ndarray):
        return X.ndim == 2 and memmap_buffer(X) is not None
    if isinstance(X, (list, tuple)) or sp.issparse(X):
        return False
    if hasattr(X, "__dlpack__") or hasattr(X, "__dataframe__"):
        return False
    shape = getattr(X, "shape", None)
    # More than 2 dimensions is lazy too, so that its error says why.
    return isinstance(shape, tuple) and len(shape) >= 2 and hasattr(X, "__getitem__")


class LazyArray:
    """Rows of a lazily read 2-D feature matrix, as float numpy arrays.

    The source must answer ``X[start:stop]`` (a block of rows) and
    ``X[rows]`` for an increasing 1-D int array (chosen rows), as numpy
    memmaps, h5py and zarr datasets, dask arrays and
    :class:`skvlm.store.StoreFeatures` do. float32 and float64 rows come back
    as they are, other numbers as float64 (what ``check_array`` with
    ``dtype=(np.float64, np.float32)`` does); a block with NaN or infinity
    raises an error naming its first bad row.

    A memmap's rows are read from its file with ``os.preadv`` into fresh
    memory, not through the mapping: touching a mapping maps whole page-cache
    folios into the process (up to megabytes per row on a modern kernel), so
    the process's resident memory would grow towards the file's size. (The
    file still fills the kernel's page cache, which the kernel reclaims at
    will.) When file reads do not apply (a copy-on-write memmap, whose pages
    may hold the caller's changes; rows that are not contiguous; no
    ``preadv``), rows are copied from the mapping and its pages handed back to
    the kernel after each read (``madvise(MADV_DONTNEED)``), which bounds the
    resident memory less tightly.

    Parameters
    ----------
    X : object
        The source (see :func:`is_lazy`).
    name : str, default="X"
        How errors name the source.
    """

    def __init__(self, X, name="X"):
        shape = tuple(X.shape)
        if len(shape) != 2:
            raise ValueError(
                f"{name} must be 2-D (n_samples, n_features); its shape is {shape}."
            )
        if shape[0] < 1 or shape[1] < 1:
            raise ValueError(
                f"{name} has shape {shape}: at least 1 sample and 1 feature are "
                "required."
            )
        dtype = getattr(X, "dtype", None)
        if dtype is not None and np.dtype(dtype).kind not in "biuf":
            raise ValueError(
                f"{name} holds {np.dtype(dtype)} values; a feature matrix must be "
                "numeric (int or float)."
            )
        self.source = X
        self.name = name
        self.shape = shape
        self._buffer = self._file = None
        if isinstance(X, np.ndarray) and getattr(X, "mode", None) != "c":
            self._buffer = memmap_buffer(X)
        if self._buffer is not None:
            start = np.frombuffer(self._buffer, dtype=np.uint8, count=1)
            self._origin = start.ctypes.data  # the mapping's first byte
            filename = getattr(X, "filename", None)
            if filename and X.flags.c_contiguous and hasattr(os, "preadv"):
                # numpy maps from the offset rounded down to the granularity.
                mapped_from = X.offset - X.offset % mmap.ALLOCATIONGRANULARITY
                self._file = filename
                self._row0 = mapped_from + X.ctypes.data - self._origin
            if not hasattr(mmap, "MADV_DONTNEED"):  # no madvise on this platform
                self._buffer = None

    @property
    def n_rows(self):
        return self.shape[0]

    @property
    def n_features(self):
        return self.shape[1]

    def block(self, start, stop):
        """Rows ``start:stop`` as a float array (a copy)."""
        if self._file is not None:
            got = self._read_file(np.array([start]), np.array([stop]))
        else:
            got = self.source[start:stop]
        return self._finish(got, start, stop, None)

    def rows(self, index):
        """Rows ``index`` (increasing ints) as a float array (a copy)."""
        index = np.asarray(index, dtype=np.int64)
        if index.size == 0:
            return self._finish(self.source[0:0], 0, 0, index)
        start, stop = int(index[0]), int(index[-1]) + 1
        if self._file is not None:
            breaks = np.flatnonzero(np.diff(index) != 1) + 1
            starts = index[np.r_[0, breaks]]
            stops = index[np.r_[breaks - 1, index.size - 1]] + 1
            got = self._read_file(starts, stops)
        elif stop - start == index.size:  # a run: read it as a block
            got = self.source[start:stop]
        else:
            got = self.source[index]
        return self._finish(got, start, stop, index)

    def _read_file(self, starts, stops):
        """Runs of rows ``starts[k]:stops[k]`` of a memmap, read from its file."""
        out = np.empty(
            (int((stops - starts).sum()), self.n_features), self.source.dtype
        )
        row_bytes = self.source.strides[0]
        fd = os.open(self._file, os.O_RDONLY)
        try:
            at = 0
            for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
                view = memoryview(out[at : at + stop - start]).cast("B")
                position = self._row0 + start * row_bytes
                while view.nbytes:  # preadv may return fewer bytes than asked
                    got = os.preadv(fd, [view], position)
                    if got == 0:
                        raise ValueError(
                            f"{self.name}'s file {self._file} ended before row "
                            f"{stop - 1}: was it truncated after mapping?"
                        )
                    view, position = view[got:], position + got
                at += stop - start
        finally:
            os.close(fd)
        return out

    def blocks(self, size):
        """``(start, stop)`` of consecutive blocks of ``size`` rows."""
        for start in range(0, self.n_rows, size):
            yield start, min(start + size, self.n_rows)

    def _finish(self, got, start, stop, index):
        out = np.asarray(got)
        if isinstance(self.source, np.ndarray) and np.may_share_memory(
            out, self.source
        ):
            out = out.copy()  # a view of a memmap: our own memory, not the file's
        expected = (stop - start if index is None else index.size, self.n_features)
        if out.shape != expected:
            raise ValueError(
                f"{self.name} returned rows of shape {out.shape} for rows "
                f"{start}..{stop - 1}, expected {expected}; a lazily read X must "
                "return rows for X[start:stop] and X[int_array]."
            )
        if out.dtype.kind not in "biuf":
            raise ValueError(
                f"{self.name} returned {out.dtype} values for rows {start}.."
                f"{stop - 1}; a feature matrix must be numeric."
            )
        if out.dtype not in (np.float64, np.float32):
            out = out.astype(np.float64)  # as check_array(dtype=(float64, float32))
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            row = start + bad if index is None else int(index[bad])
            raise ValueError(
                f"{self.name} row {row} contains NaN or infinity; a probe needs "
                "finite features (drop or fill that row)."
            )
        if self._file is None:
            self._release(start, stop)
        return out

    def _release(self, start, stop):
        """Hand the pages of rows ``start:stop`` of a memmap back to the kernel."""
        if self._buffer is None or stop <= start:
            return
        X = self.source
        corners = [
            X.ctypes.data + row * X.strides[0] + column * X.strides[1]
            for row in (start, stop - 1)
            for column in (0, X.shape[1] - 1)
        ]
        low, high = min(corners), max(corners) + X.itemsize
        begin = (low - self._origin) // mmap.PAGESIZE * mmap.PAGESIZE
        self._buffer.madvise(mmap.MADV_DONTNEED, begin, high - self._origin - begin)


class MemoryArray:
    """An in-memory array with :class:`LazyArray`'s reading methods.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Already validated (finite float32 or float64).
    """

    def __init__(self, X):
        self.source = X
        self.shape = X.shape

    n_rows = LazyArray.n_rows
    n_features = LazyArray.n_features
    blocks = LazyArray.blocks

    def block(self, start, stop):
        """Rows ``start:stop`` (a view)."""
        return self.source[start:stop]

    def rows(self, index):
        """Rows ``index`` (a copy)."""
        return self.source[index]
