"""The one path from images to site vectors.

:class:`Extraction` binds a loaded adapter to a stage, a prompt and the batch and
error settings, and does everything between a collection of images and the
vectors of its sites: the order of the batches, decoding, the forward passes
(through the adapter's capture protocol), store keys and the namespace, and
filling or serving a :class:`~skvlm.store.FeatureStore`. The transformer, the
Ray actors, spatial importance and the classifiers all go through it, so a
vector means the same wherever it was computed.
"""

from __future__ import annotations

import hashlib
import json
import os
from numbers import Integral

import numpy as np

from ._deprecation import renamed_verbose
from ._inputs import ImageLoadError, image_key, image_loader
from ._site import Site, is_position
from .callbacks import ProgressBar, check_callbacks, notify
from .models import load_adapter
from .store import compute_missing, serve

#: Bump when what a site means changes, so old stores are never served.
SITE_VERSION = 1

_PARAMS = (
    "stage",
    "prompt",
    "batch_size",
    "on_error",
    "n_workers",
    "callbacks",
    "image_aspect",
)


class Extraction:
    """Images in, the vectors of a stage's sites out.

    Parameters
    ----------
    adapter : skvlm.models.Adapter
        The loaded model (``skvlm.models.load_adapter``).
    stage : {"vision", "projector", "language"}
    prompt : str, default=None
        The instruction for stages that read one (None: the paper's question).
    batch_size : int, default=32
        Images per forward pass. Results do not depend on it.
    on_error : {"raise", "nan"}, default="raise"
        An image that cannot be read raises, or is recorded in ``failed`` and
        left out (its row comes back as NaN).
    verbose : int, default=0
        0 silent; 1 a progress bar over the images that run through the model;
        2 also a line per batch.
    n_workers : int or "auto", default="auto"
        Threads that decode and preprocess the next batches while the model
        runs the current one (0: all in the calling thread). ``"auto"``: on a
        GPU, one fewer than the CPUs (at most 8); on the CPU, 0, since the
        forward pass already keeps every core busy. Results do not depend on it.
    callbacks : list of callbacks, default=None
        Told ``on_batch_end`` after each batch that ran through the model (see
        :mod:`skvlm.callbacks`), with ``keys`` the content keys of its images.
    estimator : object, default=None
        What the callbacks receive as their ``estimator`` argument.
    image_aspect : {"native", "pad"}, default="native"
        ``"pad"`` pads each image to a square with the processor's mean colour
        before the processor sees it (:func:`skvlm._inputs.pad_to_square`); the
        namespace then differs, so padded and unpadded vectors never mix.

    Examples
    --------
    >>> import tempfile
    >>> from skvlm._extraction import Extraction
    >>> from skvlm.models import load_adapter
    >>> from skvlm.testing import make_tiny_clip, random_images
    >>> adapter = load_adapter(make_tiny_clip(tempfile.mkdtemp()), device="cpu")
    >>> ex = Extraction(adapter, "vision", batch_size=2)
    >>> ex.transform(random_images(3), None, [0, 3], "mean", []).shape
    (3, 64)
    """

    def __init__(
        self,
        adapter,
        stage,
        *,
        prompt=None,
        batch_size=32,
        on_error="raise",
        verbose=0,
        n_workers="auto",
        callbacks=None,
        estimator=None,
        image_aspect="native",
    ):
        if stage not in adapter.stages:
            reason = getattr(adapter, "unavailable", {}).get(stage)
            raise ValueError(
                f"stage={stage!r} is not available for the {adapter.family} model "
                f"{adapter_name(adapter)!r}"
                + (f" ({reason})" if reason else "")
                + f"; its stages are {list(adapter.stages)}."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if on_error not in ("raise", "nan"):
            raise ValueError(f"on_error must be 'raise' or 'nan', got {on_error!r}.")
        self.adapter = adapter
        self.stage = stage
        self.prompt = prompt
        self.batch_size = int(batch_size)
        self.on_error = on_error
        self.verbose = int(verbose)
        self.n_workers = resolve_workers(n_workers, adapter.device)
        self.callbacks = check_callbacks(callbacks)
        self.estimator = estimator
        self.image_aspect = image_aspect
        self._load_image = image_loader(image_aspect, adapter.processor)

    @classmethod
    def from_params(cls, params, estimator=None):
        """The extraction a ``VLMEmbeddingTransformer``'s parameters describe.

        Parameters
        ----------
        params : dict
            The estimator's ``get_params()``: ``model``, ``device``, ``dtype``,
            ``model_kwargs`` load the model (once per process, shared); ``stage``,
            ``prompt``, ``batch_size``, ``on_error``, ``verbose``, ``n_workers``
            and ``callbacks`` are kept (a deprecated ``progress`` is read as
            ``verbose``; the estimator warned about it in ``fit``).
        estimator : object, default=None
            What the callbacks receive as their ``estimator`` argument.

        Returns
        -------
        Extraction
        """
        verbose = renamed_verbose(
            params.get("progress"), params.get("verbose", 0), where="", warn=False
        )
        adapter = load_adapter(
            params["model"],
            device=params.get("device", "auto"),
            dtype=params.get("dtype", "auto"),
            model_kwargs=params.get("model_kwargs"),
            verbose=verbose,
        )
        kept = {k: params[k] for k in _PARAMS if k in params}
        return cls(adapter, **kept, verbose=verbose, estimator=estimator)

    # -- what a pass of this stage offers -------------------------------------------
    @property
    def n_layers(self):
        """Entries in the stage's stack."""
        return self.adapter.n_layers(self.stage)

    @property
    def dim(self):
        """Width of the widest site's vector (all are equal but in hierarchical encoders)."""
        return max(self.adapter.dims(self.stage))

    def widths(self, layers):
        """Width of each of ``layers``' vectors (non-negative layers)."""
        dims = self.adapter.dims(self.stage)
        return [dims[layer] for layer in layers]

    @property
    def reads_prompt(self):
        """Whether the stage's features depend on the prompt."""
        return self.stage in self.adapter.prompt_stages

    def all_requests(self, position=None):
        """Every (layer, named pooling) of the stage, plus ``position`` at every layer.

        A store fill computes these in one pass, so a later request at any
        layer and named pooling is a lookup. An int position is kept at every
        layer (not only the ones asked): a grid over layers at that position
        then runs the model once more in all, not once per layer.
        """
        requests = self.adapter.sites(self.stage)
        if is_position(position):
            requests += [(layer, int(position)) for layer in range(self.n_layers)]
        return requests

    def site(self, layer, pooling):
        """The :class:`~skvlm.Site` of a (non-negative layer, pooling) request."""
        return Site(self.stage, layer, pooling)

    # -- prompts, keys and the namespace ----------------------------------------------
    def prompts(self, rows, row_prompts):
        """The prompt of each row (None for stages that read no prompt)."""
        if not self.reads_prompt:
            return None
        if row_prompts is not None:
            return [row_prompts[i] for i in rows]
        return [self.prompt] * len(rows)

    def namespace(self, row_prompts=None):
        """``(namespace hex digest, human-readable manifest)`` of this extraction.

        The namespace hashes everything that decides a vector besides the
        image: the model's identity (resolved path, revision, config and every
        byte of its files), the preprocessing, the dtype, the stage, the
        formatted prompt where the stage reads it, and :data:`SITE_VERSION`.
        """
        adapter = self.adapter
        source = getattr(adapter, "source", {})
        prompt = None
        if self.reads_prompt:
            prompt = (
                "<per-row>"
                if row_prompts is not None
                else adapter.format_prompt(self.prompt)
            )
        meta = {
            "model": source.get("model", adapter_name(adapter)),
            "family": adapter.family,
            "stage": self.stage,
            "prompt": prompt,
            "dtype": str(adapter.dtype),
            "revision": source.get("revision"),
        }
        identity = {
            **meta,
            # The resolved path, so "./m" and "/abs/m" share entries; the manifest
            # keeps the spelling the user typed.
            "model": source.get("path", meta["model"]),
            "identity": model_identity(adapter),
            "preprocessing": adapter.preprocessing_config(),
            "site_version": SITE_VERSION,
        }
        if self.image_aspect != "native":
            # Only a non-default aspect enters the hash: stores filled before the
            # option existed keep their namespace.
            identity["image_aspect"] = self.image_aspect
        blob = json.dumps(identity, sort_keys=True, default=str).encode()
        return hashlib.sha1(blob).hexdigest(), meta

    def keys(self, items, row_prompts, failed):
        """The store key of every row: its image's content, and its own prompt.

        Rows whose image cannot be read get None (and join ``failed``) under
        ``on_error="nan"``; under ``"raise"`` the error propagates.
        """
        keys = [None] * len(items)
        per_row = row_prompts is not None and self.reads_prompt
        for i, item in enumerate(items):
            try:
                key = image_key(item, i)
            except ImageLoadError:
                if self.on_error == "raise":
                    raise
                failed.append(i)
                continue
            if per_row:
                text = self.adapter.format_prompt(row_prompts[i]).encode()
                key = hashlib.sha1(key.encode() + b"\0" + text).hexdigest()
            keys[i] = key
        return keys

    # -- forward passes ------------------------------------------------------------------
    def load(self, items, rows, failed):
        """``(rows, images)``: the decoded RGB images of ``rows`` that could be read."""
        kept, images = [], []
        for i in rows:
            try:
                images.append(self._load_image(items[i], i))
                kept.append(i)
            except ImageLoadError:
                if self.on_error == "raise":
                    raise
                failed.append(i)
        return kept, images

    def prepare(self, items, row_prompts, rows, failed):
        """``(rows, model inputs)`` of one batch; rows that failed to load left out."""
        rows, images = self.load(items, rows, failed)
        if not rows:
            return rows, None
        return rows, self.adapter.prepare(images, self.prompts(rows, row_prompts))

    def batches(self, items, row_prompts, requests, failed, rows=None, verbose=None):
        """Yield ``(row indices, {(layer, pooling): float32 ndarray})`` per batch.

        Parameters
        ----------
        items : list
            The images (paths, PIL images, arrays, bytes), not yet decoded.
        row_prompts : list of str or None
            Per-row prompts, or None for the extraction's prompt.
        requests : sequence of (int, str or int)
            (non-negative layer, pooling) pairs; all come from one pass.
        failed : list
            Indices of unreadable images are appended (``on_error="nan"``), in
            row order whatever ``n_workers``.
        rows : sequence of int, default=None
            Restrict the passes to these rows (a store's misses).
        verbose : int, default=None
            Overrides the extraction's ``verbose``.
        """
        import torch

        order = list(range(len(items))) if rows is None else list(rows)
        order = self._by_length(order, items, row_prompts)
        chunks = [
            order[start : start + self.batch_size]
            for start in range(0, len(order), self.batch_size)
        ]
        callbacks = self.run_callbacks(verbose)
        n_done, n_total = 0, len(order)
        try:
            for chunk, (batch_rows, batch, lost) in zip(
                chunks, self.prepared(items, row_prompts, chunks), strict=True
            ):
                failed.extend(lost)
                vectors = {}
                if batch_rows:
                    with torch.inference_mode():
                        vectors = self.extract(batch, requests)
                n_done += len(chunk)
                self.batch_end(callbacks, items, batch_rows, n_done, n_total)
                if batch_rows:
                    yield batch_rows, {k: v.cpu().numpy() for k, v in vectors.items()}
        finally:
            for callback in callbacks[len(self.callbacks) :]:
                callback.close()  # the bar of this run, even if it stopped early

    def run_callbacks(self, verbose=None):
        """The user's callbacks, plus a progress bar when ``verbose >= 1``."""
        verbose = self.verbose if verbose is None else int(verbose)
        if verbose < 1:
            return self.callbacks
        desc = f"{self.adapter.family} {self.stage}"
        return [*self.callbacks, ProgressBar(desc, verbose=verbose)]

    def batch_end(self, callbacks, items, rows, n_done, n_total):
        """Tell ``callbacks`` a batch of ``rows`` went through the model.

        ``keys`` (the images' content keys) are computed only when a user's
        callback may read them: hashing every image costs a read of its bytes.
        """
        keys = None
        if self.callbacks:
            keys = [image_key(items[i], i) for i in rows]
        notify(
            callbacks,
            "on_batch_end",
            self.estimator,
            n_done=n_done,
            n_total=n_total,
            keys=keys,
            stage=self.stage,
        )

    def extract(self, batch, requests):
        """``{(layer, pooling): tensor}`` of one prepared batch (one forward pass)."""
        return self.adapter.extract(batch, self.stage, requests)

    def prepared(self, items, row_prompts, chunks):
        """``(rows, model inputs, failed rows)`` of each chunk, in chunk order.

        With workers, the next ``n_workers + 1`` chunks are decoded and
        preprocessed in threads while the caller runs the model (image decoding,
        resizing and tokenizing release the GIL); at most that many prepared
        batches are held at once. An error (an unreadable image under
        ``on_error="raise"``) surfaces when its chunk's turn comes.
        """

        def prepare(chunk):
            lost = []
            rows, batch = self.prepare(items, row_prompts, chunk, lost)
            return rows, batch, lost

        if self.n_workers == 0 or len(chunks) < 2:
            yield from map(prepare, chunks)
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(self.n_workers, thread_name_prefix="skvlm-prepare")
        pending = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(prepare, chunk))
                if len(pending) > self.n_workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def transform(self, items, row_prompts, layers, pooling, failed, store=None):
        """The vectors of ``pooling`` at ``layers``, concatenated in that order.

        Parameters
        ----------
        items, row_prompts, failed
            As for :meth:`batches`.
        layers : list of int
            Non-negative layers.
        pooling : str or int
        store : FeatureStore, default=None
            Serve from (and fill) this store; without one, the pass stops at the
            deepest asked layer and computes only the asked sites.

        Returns
        -------
        ndarray of shape (len(items), sum of the layers' widths), float32
            NaN rows for images that could not be read.
        """
        ends = np.cumsum([0, *self.widths(layers)])
        out = np.full((len(items), ends[-1]), np.nan, dtype=np.float32)
        requests = [(layer, pooling) for layer in layers]
        if store is None:
            for rows, vectors in self.batches(items, row_prompts, requests, failed):
                out[rows] = np.concatenate([vectors[r] for r in requests], axis=1)
            return out
        space, meta = self.namespace(row_prompts)
        keys = self.keys(items, row_prompts, failed)
        sites = [self.site(layer, pooling).store_name for layer in layers]
        plan = self.plan(store, requests, pooling)
        fill = [(site.layer, site.pooling) for site in plan.requests]
        served = serve(
            store,
            space,
            keys,
            sites,
            self._computer(items, row_prompts, fill, failed),
            plan=plan,
            meta=meta,
            show=self.verbose >= 1,
        )
        for j, site in enumerate(sites):
            if served[site] is not None:
                out[:, ends[j] : ends[j + 1]] = served[site]
        return out

    def plan(self, store, requests, position=None):
        """The store's :class:`~skvlm.store.FillPlan` for ``requests``.

        The store's ``keep`` setting picks, among every site of the pass (see
        :meth:`all_requests`), what a fill computes and keeps besides the
        requested (layer, pooling) pairs.
        """
        return store.plan(
            [self.site(*r) for r in requests],
            [self.site(*r) for r in self.all_requests(position)],
            self.dim,
        )

    def fill(
        self,
        store,
        items,
        row_prompts,
        failed,
        *,
        position=None,
        requests=None,
        rows=None,
        keys=None,
        lock=True,
        verbose=None,
    ):
        """Compute and store every site the store lacks for ``items``.

        Parameters
        ----------
        store : FeatureStore
        items, row_prompts, failed
            As for :meth:`batches`.
        position : int, default=None
            An int pooling to keep at every layer besides the named poolings.
        requests : sequence of (int, str or int), default=None
            The (layer, pooling) pairs asked for; the store's ``keep`` setting
            decides what else the fill keeps. None asks for every site of the
            pass.
        rows : sequence of int, default=None
            Only these rows (default: every readable row).
        keys : list of str or None, default=None
            The rows' keys when the caller has them already (:meth:`keys`).
        lock : bool, default=True
            Take the namespace's compute lock (False when the caller hands
            each image to exactly one worker, as the Ray driver does).
        verbose : int, default=None
            Overrides the extraction's ``verbose``.

        Returns
        -------
        namespace : str
        keys : list of str or None
            None for rows that could not be read.
        computed : list of int
            Rows that ran through the model (the others were stored already).
        fallback : dict
            ``{row: {site: vector}}`` for rows the store declined to keep.
        """
        space, meta = self.namespace(row_prompts)
        keys = self.keys(items, row_prompts, failed) if keys is None else list(keys)
        store.describe(space, meta)
        if rows is None:
            rows = [i for i, key in enumerate(keys) if key is not None]
        if requests is None:
            requests = self.all_requests(position)
        plan = self.plan(store, requests, position)
        fill = [(site.layer, site.pooling) for site in plan.requests]
        computed, fallback = compute_missing(
            store,
            space,
            keys,
            rows,
            plan,
            self._computer(items, row_prompts, fill, failed, verbose),
            meta=meta,
            lock=lock,
            show=(self.verbose if verbose is None else verbose) >= 1,
        )
        for i in failed:
            keys[i] = None
        return space, keys, computed, fallback

    def _computer(self, items, row_prompts, requests, failed, verbose=None):
        """``compute(rows)`` for the store: named site vectors of each batch."""

        def compute(rows):
            for batch_rows, vectors in self.batches(
                items, row_prompts, requests, failed, rows=rows, verbose=verbose
            ):
                yield (
                    batch_rows,
                    {self.site(*r).store_name: vectors[r] for r in requests},
                )

        return compute

    def _by_length(self, rows, items, row_prompts):
        """``rows`` ordered so that a batch holds sequences of similar lengths.

        Padding never changes a result (every pooling is masked), but it costs
        compute: rows are sorted by prompt length and, for families whose token
        count grows with the image, by image area, read from the file header
        without decoding. Output rows keep their indices, so the order is
        invisible to the caller.
        """
        prompts = self.prompts(rows, row_prompts)
        dynamic = self.adapter.dynamic_resolution
        if prompts is None and not dynamic:
            return rows
        lengths = [len(p or "") for p in prompts] if prompts else [0] * len(rows)
        areas = [_area(items[i]) if dynamic else 0 for i in rows]
        keyed = sorted(zip(lengths, areas, rows, strict=True), key=lambda t: t[:2])
        return [row for _, _, row in keyed]


def resolve_workers(n_workers, device="cpu"):
    """The number of preprocessing threads ``n_workers`` asks for on ``device``.

    ``"auto"`` keeps an accelerator fed: one thread fewer than the CPUs, at most
    8. On the CPU it is 0: torch's forward pass already uses every core, and a
    preprocessing thread would only compete with it (measured in
    ``benchmarks/bench_preprocessing.py``).

    Examples
    --------
    >>> from skvlm._extraction import resolve_workers
    >>> resolve_workers(0), resolve_workers(3), resolve_workers("auto", "cpu")
    (0, 3, 0)
    """
    if n_workers == "auto":
        if str(device).startswith("cpu"):
            return 0
        return max(0, min(8, (os.cpu_count() or 1) - 1))
    if isinstance(n_workers, bool) or not isinstance(n_workers, Integral):
        raise TypeError(f"n_workers must be an int >= 0 or 'auto', got {n_workers!r}.")
    if n_workers < 0:
        raise ValueError(f"n_workers must be >= 0 or 'auto', got {n_workers}.")
    return int(n_workers)


def adapter_name(adapter):
    """The model name an adapter was loaded from, as the user gave it."""
    return getattr(adapter, "source", {}).get("model", type(adapter.model).__name__)


def model_identity(adapter):
    """A hash of :meth:`Adapter.identity`.

    Not memoised on the adapter on purpose: each call looks at the model's
    files again (one ``stat`` per file), so a directory rewritten since the
    model was loaded is noticed. Their bytes are hashed once per process (and
    per machine, with the on-disk digest memo), the memo keyed by each file's
    (size, mtime, ctime, inode).
    """
    identity = adapter.identity()
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _area(item):
    """Pixel count of an image without decoding it (0 when unknown)."""
    from PIL import Image

    try:
        if isinstance(item, Image.Image):
            return item.width * item.height
        if isinstance(item, np.ndarray):
            return int(item.shape[0]) * int(item.shape[1])
        if isinstance(item, (str, os.PathLike)):
            with Image.open(item) as image:  # reads the header only
                return image.width * image.height
    except Exception:
        # A sort hint never fails a transform: the batch loop reports an
        # unreadable item (a decompression bomb too) under on_error.
        return 0
    return 0
