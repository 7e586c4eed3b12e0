"""The paper's feature probe as a scikit-learn classifier trained with torch."""

import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .._sklearn_compat import Interval, StrOptions, validate_parameters
from ..models import resolve_device
from . import _probe_training as training
from ._base import scores_to_proba
from ._lazy_array import LazyArray, MemoryArray, is_lazy
from ._probe_rows import check_float32_range
from ._probe_training import ACTIVATIONS, activate


def _stochastic(probe):
    """``available_if`` test of ``partial_fit``: Adam only, as in MLPClassifier."""
    if probe.solver != "adam":
        raise AttributeError(
            f"partial_fit is only available with solver='adam'; solver="
            f"{probe.solver!r} trains on all rows at once. Use fit, or "
            "solver='adam'."
        )
    return True


class LinearProbeClassifier(ClassifierMixin, BaseEstimator):
    """Linear or MLP probe on fixed features, trained with Adam or L-BFGS in torch.

    The probe of Zhang et al. (2024) on VLM hidden states: a linear layer (or an
    MLP with hidden layers), cross-entropy, mini-batch Adam. Unlike the paper, the
    epoch whose weights are kept is chosen on a validation split carved from the
    training data passed to ``fit``, never on test data. ``solver="lbfgs"``
    instead minimises the full-batch loss with L-BFGS, as ``LogisticRegression``
    does.

    ``X`` may be a feature matrix that does not fit in memory: a numpy memmap
    (``np.load(path, mmap_mode="r")``), an h5py or zarr dataset, or the
    features of a feature store (:class:`skvlm.store.StoreFeatures`). Every
    method then reads it ``batch_size`` rows at a time, so memory stays a few
    batches whatever the rows; the fitted probe is bitwise the one ``fit``
    gives on the same rows in memory. :meth:`partial_fit` trains on batches
    the caller streams.

    Parameters
    ----------
    hidden_layer_sizes : array-like of int or "n_features", default=()
        Width of each hidden layer. ``()`` is a linear probe (then ``coef_`` and
        ``intercept_`` exist). ``"n_features"`` stands for the width of ``X``:
        the paper's one-hidden-layer probe is ``("n_features",)``
        (``feature_analysis/probe.py``: ``Linear(d, d)``, ReLU, ``Linear(d,
        classes)``); see :meth:`paper_preset`.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
        Activation of the hidden layers, as in ``MLPClassifier``.
    solver : {"lbfgs", "adam"}, default="lbfgs"
        ``"adam"``: mini-batch Adam (AdamW with ``weight_decay``), the paper's
        optimiser (see :meth:`paper_preset`). ``"lbfgs"`` (the default, chosen
        by ``benchmarks/bench_linear_probe.py``: on 10,000 x 1,024 features
        and 100 classes it reached ``LogisticRegression``'s accuracy where
        Adam ended 1.1 points lower, in a small fraction of Adam's time): full-batch ``torch.optim.LBFGS`` with a strong
        Wolfe line search on all training rows at once (they must fit in the
        device's memory); ``learning_rate_init``, ``weight_decay``,
        ``batch_size`` (except as the block size of a lazily read ``X``),
        ``shuffle``, ``early_stopping``, ``validation_fraction`` and
        ``n_iter_no_change`` are then unused. On a lazily read ``X`` the
        full-batch loss and gradient are summed over blocks of ``batch_size``
        rows, read again at every loss evaluation.
    alpha : float or "auto", default="auto"
        L2 penalty added to the loss, for both solvers; ``"auto"`` is 1.0 with
        ``solver="lbfgs"`` (``LogisticRegression``'s default ``C=1``) and 0.0
        with ``solver="adam"`` (the paper's probe). The minimised objective
        is ``mean cross-entropy + alpha / (2 * n_train) * sum ||W||^2`` over the
        weight matrices (not the biases), as ``MLPClassifier.alpha`` with
        ``n_train`` the training rows. ``alpha=1/C`` is therefore the objective of
        ``LogisticRegression(C=C)`` (``C * sum of losses + ||W||^2 / 2``, divided
        by ``n_train``), except that the weights are penalised in the
        standardised space when ``standardize=True``.
    learning_rate_init : float, default=1e-3
        Adam's step size (the paper's value).
    weight_decay : float, default=0.0
        Decoupled weight decay (AdamW) on the weight matrices, not the biases.
        Named after torch because it is not an L2 term added to the loss (that is
        ``alpha``). With ``0`` the optimiser is plain Adam. Adam only.
    batch_size : int, default=512
        Mini-batch size (capped at the number of training rows). Also the
        number of rows read at a time from a lazily read ``X``, by every
        method and both solvers.
    shuffle : bool, default=True
        Visit the training rows in a new random order each epoch (and each
        :meth:`partial_fit` call), as ``MLPClassifier.shuffle``; ``False``
        takes them in order, the fast order for a file whose rows were
        shuffled once when written. Adam only.
    init : {"zero_output", "torch_linear"}, default="zero_output"
        Initial weights. ``"zero_output"``: the output layer starts at zero, as
        ``LogisticRegression`` does (a random start adds logit noise that,
        without weight decay, the directions the data barely constrain never
        lose); hidden layers are drawn as ``torch.nn.Linear`` bounds them.
        ``"torch_linear"``: every layer exactly as ``torch.nn.Linear`` draws it
        (the paper's probe), from the seed ``random_state`` gives.
    max_iter : int, default=200
        Adam: maximum number of epochs (passes over the training rows), as
        ``MLPClassifier.max_iter`` means for Adam. L-BFGS: maximum number of
        L-BFGS iterations (each one a line search of one or more full-batch
        loss evaluations, at most ``1.25 * max_iter`` evaluations in all).
    standardize : bool, default=True
        Centre and scale each feature with the training rows' mean and standard
        deviation before the network (constant features are left unscaled). The
        paper probes raw features; standardising makes one learning rate fit
        features of any scale. ``coef_`` and ``intercept_`` fold it in.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the training rows (stratified when
        every class has two rows or more), stop when the validation loss has not
        improved by ``tol`` for ``n_iter_no_change`` epochs, and restore the
        weights of the epoch with the lowest validation loss. With ``False``,
        train on all rows and stop when the training loss has not improved by
        ``tol`` for ``n_iter_no_change`` epochs. The paper instead reports the
        epoch of best *test* accuracy; selecting on held-out training rows keeps
        the test set unseen, and the loss is used rather than the accuracy
        because accuracy on a small split ties and jumps from epoch to epoch.
        Adam only: L-BFGS trains on all rows and stops on ``tol``.
    validation_fraction : float, default=0.1
        Share of the training rows held out when ``early_stopping=True``.
    n_iter_no_change : int, default=10
        Patience, in epochs. With ``early_stopping=False`` and a patience of
        ``max_iter`` or more, training runs exactly ``max_iter`` epochs (the
        paper's fixed schedule) and reaching it is no convergence failure.
    tol : float, default=1e-4
        Adam: smallest decrease of the monitored loss (validation loss with
        early stopping, training loss without) counted as an improvement.
        L-BFGS: stop when the objective changes by less than ``tol`` between two
        iterations, when an iteration moves no weight by more than ``tol``, or
        when the largest absolute entry of the gradient is at most ``tol`` (the
        gradient test is ``LogisticRegression``'s own ``tol``).
    device : str, default="auto"
        Torch device for training: "auto" picks cuda, then mps, then cpu.
        Prediction runs in numpy from the stored weights.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling and the validation split through
        local generators (torch's global RNG is never touched). Same seed, same
        data, CPU: identical weights.
    verbose : int, default=0
        Print one line per epoch when > 0.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    coefs_ : list of ndarray
        Weight matrices of shape (n_in, n_out), layer by layer, in the
        standardised feature space (as ``MLPClassifier.coefs_``).
    intercepts_ : list of ndarray
        Bias vectors, layer by layer.
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        Linear probe only: weights in the original feature space, so that
        ``decision_function(X) == X @ coef_.T + intercept_``. One row for a
        binary problem (the logit of ``classes_[1]``), as ``LogisticRegression``.
    intercept_ : ndarray of shape (1,) or (n_classes,)
        Linear probe only: bias in the original feature space.
    mean_ : ndarray of shape (n_features,) or None
        Feature means used for standardisation (None when ``standardize=False``):
        those of the training rows of ``fit``, or of the first
        :meth:`partial_fit` call's rows.
    scale_ : ndarray of shape (n_features,) or None
        Feature scales used for standardisation.
    n_iter_ : int
        Epochs run (Adam; one per :meth:`partial_fit` call) or L-BFGS
        iterations run.
    best_epoch_ : int
        Epoch (1-based) whose weights were kept: the lowest validation loss with
        early stopping, else the last epoch; ``n_iter_`` with L-BFGS.
    loss_curve_ : list of float
        Adam: mean training objective of each epoch. L-BFGS: the objective at
        each loss evaluation, line-search trials included.
    validation_scores_ : list of float or None
        Validation accuracy of each epoch (None without early stopping, with
        L-BFGS and after :meth:`partial_fit`).
    validation_loss_curve_ : list of float or None
        Validation loss of each epoch (None without early stopping, with
        L-BFGS and after :meth:`partial_fit`).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features,)
        Feature names, when ``X`` had string column names.

    See Also
    --------
    sklearn.linear_model.LogisticRegression : L-BFGS fit of the same linear model.
    sklearn.neural_network.MLPClassifier : numpy MLP with the same parameter names.

    Notes
    -----
    A binary problem uses one logit and a sigmoid: ``predict_proba`` is
    ``[1 - sigmoid(d), sigmoid(d)]`` and, for several classes, ``softmax(d)``, with
    ``d = decision_function(X)``. Training is float32; fitted weights are numpy
    arrays, so the fitted estimator pickles without torch state. On a GPU, some
    kernels are not bitwise deterministic, so reruns may differ in the last bits.
    The output layer starts at zero, as ``LogisticRegression`` does; hidden layers
    start as ``torch.nn.Linear`` does. With ``random_state=None`` the seed is drawn
    from numpy's global generator, as everywhere in scikit-learn.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_iris
    >>> from skvlm.classifiers import LinearProbeClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> probe = LinearProbeClassifier(device="cpu").fit(X, y)  # L-BFGS, as C=1
    >>> probe.score(X, y) > 0.9
    True
    >>> probe.coef_.shape
    (3, 4)
    >>> probe.predict_proba(X[:2]).sum(axis=1)
    array([1., 1.])
    >>> adam = LinearProbeClassifier(  # the paper's optimiser, one argument away
    ...     solver="adam", learning_rate_init=3e-2, batch_size=16, random_state=0,
    ...     device="cpu"
    ... ).fit(X, y)
    >>> adam.score(X, y) > 0.9
    True

    Features in a file train a batch at a time, to the same weights:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "features.npy")
    >>> np.save(path, X)
    >>> streamed = LinearProbeClassifier(
    ...     solver="adam", learning_rate_init=3e-2, batch_size=16, random_state=0,
    ...     device="cpu"
    ... ).fit(np.load(path, mmap_mode="r"), y)
    >>> bool(np.array_equal(streamed.coef_, adam.coef_))
    True
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
            StrOptions({"n_features"}),
        ],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "solver": [StrOptions({"adam", "lbfgs"})],
        "alpha": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "init": [StrOptions({"zero_output", "torch_linear"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "standardize": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        hidden_layer_sizes=(),
        *,
        activation="relu",
        solver="lbfgs",
        alpha="auto",
        learning_rate_init=1e-3,
        weight_decay=0.0,
        batch_size=512,
        shuffle=True,
        init="zero_output",
        max_iter=200,
        standardize=True,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.learning_rate_init = learning_rate_init
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.init = init
        self.max_iter = max_iter
        self.standardize = standardize
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @classmethod
    def paper_preset(cls, *, mlp=False, n_epochs=500, **params):
        """The probe of Zhang et al.'s code (``feature_analysis/probe.py``).

        A linear layer (or, with ``mlp=True``, ``Linear(d, d)``, ReLU,
        ``Linear(d, classes)``) on the raw features, cross-entropy, Adam at
        1e-3, batch 512, no weight decay, ``n_epochs`` epochs (the paper: 500,
        and 100 on ImageNet, ``feature_analysis/probe.sh``) with no early
        stopping, every layer initialised as ``torch.nn.Linear`` does
        (``init="torch_linear"``), and the rows visited in the order given,
        the same every epoch (``shuffle=False``): the paper shuffles its rows
        once (``random.seed(1234); random.shuffle(data)``) before training, so
        pass them shuffled once. One choice is the caller's: the paper reports
        the best *test* accuracy over the epochs, which an estimator that never
        sees the test set cannot do; train epoch by epoch with
        :meth:`partial_fit` (``n`` calls are ``fit`` with ``max_iter=n``) and
        score after each, as ``scripts/paper_table.py --protocol paper`` does.
        ``init="zero_output", shuffle=True`` give the sounder defaults.

        Parameters
        ----------
        mlp : bool, default=False
            One hidden layer as wide as the features.
        n_epochs : int, default=500
        **params
            Any other parameter (``device``, ``random_state``...), or an
            override of the preset's.

        Returns
        -------
        probe : LinearProbeClassifier

        Examples
        --------
        >>> from skvlm.classifiers import LinearProbeClassifier
        >>> probe = LinearProbeClassifier.paper_preset(n_epochs=100)
        >>> probe.max_iter, probe.standardize, probe.early_stopping
        (100, False, False)
        >>> probe.init, probe.shuffle
        ('torch_linear', False)
        """
        settings = dict(
            hidden_layer_sizes=("n_features",) if mlp else (),
            activation="relu",
            solver="adam",
            alpha=0.0,
            learning_rate_init=1e-3,
            weight_decay=0.0,
            batch_size=512,
            max_iter=n_epochs,
            standardize=False,
            early_stopping=False,
            n_iter_no_change=n_epochs,
            init="torch_linear",
            shuffle=False,
        )
        return cls(**{**settings, **params})

    # ------------------------------------------------------------------ fit
    def fit(self, X, y):
        """Train the probe on features ``X`` and labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature matrix (e.g. the output of ``VLMEmbeddingTransformer``), in
            memory or lazily read (a memmap, an h5py or zarr dataset, a
            :class:`skvlm.store.StoreFeatures`): then it is read ``batch_size``
            rows at a time, once for the standardisation statistics and once
            per epoch.
        y : array-like of shape (n_samples,)
            Class labels of any sortable type (ints, strings, ...).

        Returns
        -------
        self : LinearProbeClassifier
            The fitted probe.
        """
        validate_parameters(self)
        hidden = self._check_hidden_layer_sizes()
        X, y = self._check_data(X, y, reset=True)
        hidden = [X.n_features if size == "n_features" else size for size in hidden]
        check_classification_targets(y)
        target_type = type_of_target(y)
        if target_type not in ("binary", "multiclass"):
            raise ValueError(
                f"LinearProbeClassifier supports binary and multiclass targets; y "
                f"is {target_type!r}. Pass one label per row."
            )
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                "LinearProbeClassifier needs at least 2 classes in y; got only one "
                f"class ({self.classes_[0]!r}). Give rows of two classes or more."
            )
        # A fit starts afresh: no Adam state from an earlier partial_fit.
        self.__dict__.pop("_adam_state", None)
        self.__dict__.pop("_shuffle_state", None)
        device = resolve_device(self.device)
        seed = self._draw_seed()

        if self.early_stopping and self.solver == "adam":
            train_idx, val_idx = self._split_validation(y_index, seed)
        else:
            train_idx, val_idx = np.arange(X.n_rows), None
        self._standardise(X, train_idx)
        n_outputs = 1 if len(self.classes_) == 2 else len(self.classes_)
        result = self._train(
            X,
            y_index,
            train_idx,
            val_idx,
            [X.n_features, *hidden, n_outputs],
            device,
            seed,
        )
        self._keep_weights(result.weights, result.biases)
        return self

    @available_if(_stochastic)
    def partial_fit(self, X, y, classes=None):
        """One epoch of Adam over ``X``, continuing from the current state.

        As ``MLPClassifier.partial_fit``: each call is one pass over its rows in
        mini-batches of ``batch_size`` (shuffled when ``shuffle=True``), with no
        validation split and no early stopping; the weights, Adam's moments
        and the shuffling generator carry over to the next call. ``n`` calls on
        all the rows give bitwise the probe of ``fit`` with
        ``early_stopping=False, max_iter=n`` and the same ``random_state``.

        The first call on an unfitted probe sets ``classes_``, ``n_features_in_``
        and, with ``standardize=True``, ``mean_`` and ``scale_`` from its rows
        (give a first batch that represents the data, or all of it: a lazily
        read ``X`` is read in blocks). The ``alpha`` penalty is scaled by the
        call's rows. On a probe trained by :meth:`fit`, training continues
        from its weights and standardisation with a fresh Adam state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features of this batch of rows, in memory or lazily read.
        y : array-like of shape (n_samples,)
            Their labels, each one of ``classes``.
        classes : array-like of shape (n_classes,), default=None
            Every class of the whole data. Required on the first call, may be
            omitted afterwards (then it must not change).

        Returns
        -------
        self : LinearProbeClassifier
            The updated probe.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_iris
        >>> from skvlm.classifiers import LinearProbeClassifier
        >>> X, y = load_iris(return_X_y=True)
        >>> order = np.random.default_rng(0).permutation(len(y))  # a shuffled stream
        >>> probe = LinearProbeClassifier(
        ...     solver="adam", learning_rate_init=3e-2, batch_size=16,
        ...     random_state=0, device="cpu"
        ... )
        >>> for epoch in range(20):
        ...     for chunk in np.array_split(order, 3):
        ...         probe = probe.partial_fit(X[chunk], y[chunk], classes=[0, 1, 2])
        >>> probe.n_iter_, probe.score(X, y) > 0.9
        (60, True)
        """
        validate_parameters(self)
        first = not hasattr(self, "classes_")
        if first:
            hidden = self._check_hidden_layer_sizes()
            if classes is None:
                raise ValueError(
                    "classes must be passed on the first call to partial_fit: "
                    "every class of the whole data, e.g. np.unique(y_all)."
                )
            classes = unique_labels(classes)
            if len(classes) < 2:
                raise ValueError(
                    f"classes has {len(classes)} class; LinearProbeClassifier "
                    "needs at least 2."
                )
        elif classes is not None and not np.array_equal(
            self.classes_, unique_labels(classes)
        ):
            raise ValueError(
                f"classes={classes!r} is not the classes_ of the earlier calls "
                f"({self.classes_!r}); pass the same classes, or none."
            )
        else:
            classes = self.classes_
        X, y = self._check_data(X, y, reset=first)
        check_classification_targets(y)
        unknown = np.setdiff1d(y, classes)
        if unknown.size:
            raise ValueError(
                f"y has labels {unknown[:10].tolist()} not in classes "
                f"{classes.tolist()}; pass every class of the whole data as "
                "classes on the first call."
            )
        y_index = np.searchsorted(classes, y)
        device = resolve_device(self.device)
        rows = np.arange(X.n_rows)
        if first:
            self._standardise(X, rows)
            seed = self._draw_seed()
            generator = torch.Generator().manual_seed(seed)
            n_outputs = 1 if len(classes) == 2 else len(classes)
            hidden = [X.n_features if h == "n_features" else h for h in hidden]
            network = training.ProbeNetwork(
                [X.n_features, *hidden, n_outputs],
                self.activation,
                self._alpha(),
                device,
                generator,
                self.init,
            )
        else:
            network = training.ProbeNetwork.from_numpy(
                self.coefs_, self.intercepts_, self.activation, self._alpha(), device
            )
            generator = torch.Generator()
            if hasattr(self, "_shuffle_state"):
                generator.set_state(torch.from_numpy(self._shuffle_state.copy()))
            else:  # the first partial_fit after fit
                generator.manual_seed(self._draw_seed())
        trainer = training.AdamTrainer(
            network,
            learning_rate=self.learning_rate_init,
            weight_decay=self.weight_decay,
            n_train=X.n_rows,
        )
        if hasattr(self, "_adam_state"):
            trainer.load_state_arrays(self._adam_state)
        source = self._rows(X, y_index, rows, device)
        batch_size = min(self.batch_size, X.n_rows)
        loss = trainer.epoch(
            training.minibatches(source, batch_size, generator, self.shuffle)
        )
        # Only a finished epoch changes the probe (a bad row fails it whole).
        self.classes_ = classes
        self._adam_state = trainer.state_arrays()
        self._shuffle_state = generator.get_state().numpy().copy()
        weights, biases = training.ProbeNetwork.to_numpy(network.snapshot())
        self._keep_weights(weights, biases)
        self.n_iter_ = 1 if first else self.n_iter_ + 1
        self.best_epoch_ = self.n_iter_
        self.loss_curve_ = [loss] if first else [*self.loss_curve_, loss]
        self.validation_scores_ = self.validation_loss_curve_ = None
        return self

    def _check_data(self, X, y, reset):
        """``(X as MemoryArray or LazyArray, y)``, checked as ``validate_data``."""
        if not is_lazy(X):
            X, y = validate_data(
                self, X, y, dtype=(np.float64, np.float32), reset=reset
            )
            names = getattr(self, "feature_names_in_", None)
            check_float32_range(X, feature_names=names, estimator=type(self).__name__)
            return MemoryArray(X), y
        X = LazyArray(X)
        y = column_or_1d(y, warn=True)
        if y.shape[0] != X.n_rows:
            raise ValueError(
                f"X has {X.n_rows} rows and y has {y.shape[0]} labels; give one "
                "label per row."
            )
        self._check_lazy_features(X, reset)
        return X, y

    def _check_lazy_features(self, X, reset):
        """``n_features_in_`` and feature names for a lazily read X (no names)."""
        if reset:
            self.n_features_in_ = X.n_features
            self.__dict__.pop("feature_names_in_", None)
            return
        if X.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {X.n_features} features, but {type(self).__name__} is "
                f"expecting {self.n_features_in_} features as input."
            )
        if hasattr(self, "feature_names_in_"):
            warnings.warn(
                f"X does not have valid feature names, but {type(self).__name__} "
                "was fitted with feature names",
                UserWarning,
                stacklevel=3,
            )

    def _alpha(self):
        if self.alpha == "auto":
            return 1.0 if self.solver == "lbfgs" else 0.0
        return float(self.alpha)

    def _draw_seed(self):
        rng = check_random_state(self.random_state)
        return int(rng.randint(np.iinfo(np.int32).max))

    def _standardise(self, X, rows):
        """Set ``mean_`` and ``scale_`` from rows ``rows`` of ``X`` (one pass)."""
        if self.standardize:
            self.mean_, self.scale_ = training.standardisation(X, rows, self.batch_size)
        else:
            self.mean_ = self.scale_ = None

    def _keep_weights(self, weights, biases):
        """Set ``coefs_``, ``intercepts_`` and, for a linear probe, ``coef_``."""
        self.coefs_ = weights
        self.intercepts_ = biases
        if len(weights) == 1:
            # Fold the standardisation in: W.T (x - mean) / scale + b is
            # x @ coef.T + intercept in the original feature space.
            coef = weights[0].T.astype(np.float64)
            intercept = biases[0].astype(np.float64)
            if self.mean_ is not None:
                coef = coef / self.scale_
                intercept = intercept - coef @ self.mean_
            self.coef_, self.intercept_ = coef, intercept
        else:
            # A refit as an MLP must not leave a previous linear fit's coef_.
            self.__dict__.pop("coef_", None)
            self.__dict__.pop("intercept_", None)

    def _check_hidden_layer_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, (Integral, str)) else list(sizes)
        for position, size in enumerate(sizes):
            if isinstance(size, str) and size == "n_features":
                continue
            if not isinstance(size, Integral) or isinstance(size, bool) or size < 1:
                raise ValueError(
                    f"hidden_layer_sizes[{position}] is {size!r}; every hidden layer "
                    "size must be an int >= 1 or 'n_features' (use () for a linear "
                    "probe)."
                )
        return [size if isinstance(size, str) else int(size) for size in sizes]

    def _split_validation(self, y_index, seed):
        """Carve validation rows out of ``fit``'s rows: (train_idx, val_idx)."""
        n_samples = y_index.shape[0]
        n_val = math.ceil(self.validation_fraction * n_samples)
        if n_samples - n_val < 1:
            raise ValueError(
                f"early_stopping=True holds out {n_val} of {n_samples} rows for "
                "validation and leaves none to train on; pass more rows, a smaller "
                "validation_fraction or early_stopping=False."
            )
        n_classes = int(y_index.max()) + 1
        counts = np.bincount(y_index, minlength=n_classes)
        can_stratify = (
            counts.min() >= 2 and n_val >= n_classes and n_samples - n_val >= n_classes
        )
        return train_test_split(
            np.arange(n_samples),
            test_size=n_val,
            stratify=y_index if can_stratify else None,
            random_state=seed,
        )

    def _rows(self, X, y_index, index, device):
        """The rows ``index`` of ``X`` as a training source.

        Rows in memory are standardised onto the device once; a lazily read X
        is read and standardised batch by batch. Both give the same tensors.
        """
        if isinstance(X, MemoryArray):
            inputs = training.to_tensor(
                X.source, index, self.mean_, self.scale_, device
            )
            targets = torch.as_tensor(y_index[index], device=device)
            return training.TensorRows(inputs, targets)
        return training.StreamedRows(X, index, y_index, self.mean_, self.scale_, device)

    def _train(self, X, y_index, train_idx, val_idx, sizes, device, seed):
        """Train the torch network (``_probe_training``); record its history."""
        generator = torch.Generator().manual_seed(seed)
        network = training.ProbeNetwork(
            sizes, self.activation, self._alpha(), device, generator, self.init
        )

        def rows(index):
            return self._rows(X, y_index, index, device)

        if self.solver == "lbfgs":
            result = training.train_lbfgs(
                network,
                rows(train_idx),
                max_iter=self.max_iter,
                tol=self.tol,
                block_size=self.batch_size,
                verbose=self.verbose,
            )
            if not result.converged:
                warnings.warn(
                    f"LinearProbeClassifier(solver='lbfgs') reached max_iter="
                    f"{self.max_iter} iterations (or "
                    f"{training.lbfgs_max_evaluations(self.max_iter)} loss "
                    "evaluations) before tol was met; raise max_iter to train "
                    "longer.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        else:
            result = training.train_adam(
                network,
                rows(train_idx),
                None if val_idx is None else rows(val_idx),
                learning_rate=self.learning_rate_init,
                weight_decay=self.weight_decay,
                batch_size=self.batch_size,
                max_iter=self.max_iter,
                tol=self.tol,
                n_iter_no_change=self.n_iter_no_change,
                generator=generator,
                shuffle=self.shuffle,
                verbose=self.verbose,
            )
            fixed = not self.early_stopping and self.n_iter_no_change >= self.max_iter
            if not result.converged and not fixed:
                warnings.warn(
                    f"LinearProbeClassifier reached max_iter={self.max_iter} epochs "
                    "while still improving; raise max_iter to train longer.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        self.n_iter_ = result.n_iter
        self.best_epoch_ = result.best_epoch
        self.loss_curve_ = result.loss_curve
        self.validation_scores_ = result.validation_scores
        self.validation_loss_curve_ = result.validation_loss_curve
        return result

    # -------------------------------------------------------------- predict
    def _linear_decision(self):
        """Return ``(coef_, intercept_)`` for a linear probe, None for an MLP.

        The decision function is then exactly ``X @ coef_.T + intercept_`` (1-D
        for a binary problem), which fast exact permutation importance relies on.
        """
        check_is_fitted(self)
        if len(self.coefs_) > 1:
            return None
        return self.coef_, self.intercept_

    def decision_function(self, X):
        """Logits of each class; 1-D (logit of ``classes_[1]``) for binary.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature matrix, in memory or lazily read (then read ``batch_size``
            rows at a time).

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Decision values.
        """
        n_rows, blocks = self._score_blocks(X)
        scores = None
        for start, stop, block in blocks:
            if scores is None:
                scores = np.empty((n_rows, block.shape[1]), block.dtype)
            scores[start:stop] = block
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def _score_blocks(self, X):
        """``(n_rows, iterator of (start, stop, logits))``: X whole, or by blocks."""
        check_is_fitted(self)
        if not is_lazy(X):
            X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
            return X.shape[0], iter([(0, X.shape[0], self._scores(X))])
        X = LazyArray(X)
        self._check_lazy_features(X, reset=False)
        blocks = X.blocks(self.batch_size)
        return X.n_rows, (
            (start, stop, self._scores(X.block(start, stop))) for start, stop in blocks
        )

    def _scores(self, X):
        """Logits (n_samples, n_outputs) of a validated in-memory block."""
        linear = self._linear_decision()
        if linear is not None:
            coef, intercept = linear
            scores = X @ coef.T.astype(X.dtype) + intercept.astype(X.dtype)
        else:
            out = X if self.mean_ is None else (X - self.mean_) / self.scale_
            out = out.astype(X.dtype, copy=False)
            for layer, (w, b) in enumerate(
                zip(self.coefs_, self.intercepts_, strict=True)
            ):
                out = out @ w.astype(X.dtype) + b.astype(X.dtype)
                if layer < len(self.coefs_) - 1:
                    out = activate(out, self.activation, np)
            scores = out
        return scores

    def predict_proba(self, X):
        """Class probabilities: softmax of the logits, or sigmoid for binary.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature matrix, in memory or lazily read.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Rows sum to 1, columns follow ``classes_``.
        """
        return scores_to_proba(self.decision_function(X))

    def predict(self, X):
        """Most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature matrix, in memory or lazily read.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Predicted labels, drawn from ``classes_``.
        """
        n_rows, blocks = self._score_blocks(X)
        index = np.empty(n_rows, dtype=np.intp)
        # Block by block: a lazily read X never needs all its logits at once.
        for start, stop, scores in blocks:
            if scores.shape[1] == 1:
                index[start:stop] = scores[:, 0] > 0
            else:
                index[start:stop] = scores.argmax(axis=1)
        return self.classes_[index]
