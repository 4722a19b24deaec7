"""Peer libraries' own active-learning strategies, run in OUR simulation loop (same head, same budget).

Each adapter wraps the peer's OWN query strategy / heuristic object (nothing here re-implements a
criterion) as a `disal.strategies.Strategy`, so `HeadSimulation` runs it beside ours:

- small-text 1.4.1: `smalltext:breaking_ties`, `smalltext:prediction_entropy`,
  `smalltext:least_confidence`, `smalltext:greedy_coreset`, `smalltext:badge`, `smalltext:egl`,
  `smalltext:bald`;
- baal 2.1.0: `baal:bald`, `baal:batchbald`, `baal:powerbald`;
- scikit-activeml 1.0.1: `skactiveml:dropquery`, `skactiveml:falcun`, `skactiveml:typiclust`,
  `skactiveml:probcover`.

small-text strategies talk to a classifier and a dataset. `_HeadClassifier` is a thin facade that
answers their calls (`predict_proba`, `predict_proba(dropout_sampling=T)`, `embed`, and for EGL
`model` / `_create_collate_fn`) from the arrays OUR head already produced (`ScoringInputs`), and
`_PoolDataset` is a dataset of row positions that supports the indexing they do. baal heuristics
take MC predictions directly ([N, C, T]). scikit-activeml strategies get `query(X, y, clf,
fit_clf=False, candidates=pool rows)` with X = pool rows then labeled rows (labeled rows carry a
placeholder label: these four read only which rows are labeled) and a `SkactivemlClassifier` facade:
`_SkalProbs` answers predict_proba from our head's probabilities (FALCUN), `_SkalHead` runs OUR
trained head on whatever rows it is given (DropQuery predicts on feature-dropped copies of the pool).

Determinism and position independence: the pool is handed to the peer in a canonical order (sorted
by item id, like our CoreSet/BADGE), and the peer call runs with numpy's global RNG, torch's and
Python's `random` seeded from `seed` (their states are restored afterwards). small-text's BADGE
draws from an unseeded `np.random.RandomState()` (OS entropy); during the call that module's `np`
is swapped for a proxy whose `RandomState()` is seeded, so BADGE is reproducible too. A lock
serialises peer calls (the seeding and that swap are process-global).

Scores: `selected` is always the peer's choice, in the order the peer returned it (for small-text's
top-k strategies that is `np.argpartition` order: deterministic, not sorted). Every other item
follows in descending score, ties broken by `seeded_order` (id and seed). Per-item scores are:
- the peer's own scores where it exposes them, oriented so higher = more worth labeling:
  small-text confidence strategies (`scores_`: -margin, entropy, -max prob), EGL (`scores_`),
  small-text BALD (its own `_bald` over the same MC samples it saw), baal BALD / BatchBALD
  (`get_ranks` scores; BatchBALD's are 0 for items outside its greedy history) and PowerBALD (its
  sampling distribution, BALD^(1/temperature) normalised);
- scikit-activeml: FALCUN's first-step relevance (margin uncertainty^gamma, normalised) and
  ProbCover's first-step out-degree (how many uncovered points a pick would cover);
- otherwise a rank-derived score: the i-th of b selected items gets b - i (highest first), all
  others 0 (small-text greedy_coreset and BADGE, which return only indices; EGL when the batch
  is the whole pool, where small-text returns before scoring; DropQuery and TypiClust, whose
  utilities are distances to one cluster at a time).

Every import of small_text / baal / skactiveml lives inside this module, inside functions: the service never
imports them. Peers are single-label only (the small-text strategies used here are constrained or
built for single-label; baal's BALD reads the class axis as a distribution): multi-label inputs
raise a clear ValueError.
"""

from __future__ import annotations

import contextlib
import io
import random
import threading
import warnings

import numpy as np
import torch

from ..strategies import ScoringInputs, Selection, Strategy, make_strategy
from ..strategies.base import MissingInputError, check_selection_args, seeded_order
from ..training.head import LinearHead

PEER_PREFIXES = ("smalltext", "baal", "skactiveml")

#: spec -> the ScoringInputs fields it reads (what `needs()` reports and head_scoring_inputs computes)
PEER_SPECS: dict[str, frozenset] = {
    "smalltext:breaking_ties": frozenset({"probs"}),
    "smalltext:prediction_entropy": frozenset({"probs"}),
    "smalltext:least_confidence": frozenset({"probs"}),
    "smalltext:greedy_coreset": frozenset({"features", "labeled_features"}),
    "smalltext:badge": frozenset({"probs", "features"}),
    "smalltext:egl": frozenset({"probs", "features"}),
    "smalltext:bald": frozenset({"mc_probs"}),
    "baal:bald": frozenset({"mc_probs"}),
    "baal:batchbald": frozenset({"mc_probs"}),
    "baal:powerbald": frozenset({"mc_probs"}),
    # DropQuery: dropout on the head's INPUT features, predictions by our head (head_fn), k-means on them
    "skactiveml:dropquery": frozenset({"features", "head_fn"}),
    "skactiveml:falcun": frozenset({"probs"}),
    "skactiveml:typiclust": frozenset({"features", "labeled_features"}),
    # ProbCover: probs only for the number of classes (its delta search clusters into n_classes)
    "skactiveml:probcover": frozenset({"features", "labeled_features", "probs"}),
}

#: Candidate subsets for the peers too slow to score a 3,000-item pool every round on a 2-core CPU
#: (measured per round, 3,000 x 384, batch 20, T = 20: baal BatchBALD ~90 s, its joint-entropy
#: tensor is ~1.2 GB; small-text greedy coreset ~9 s). The simulator scores a seeded random
#: subset of this size for them unless --max-candidates says otherwise; the report names it.
DEFAULT_MAX_CANDIDATES: dict[str, int] = {"baal:batchbald": 200, "smalltext:greedy_coreset": 1000}

#: Peer specs that cannot run faithfully on our model: spec -> (exact error, why). Empty: all run.
UNSUPPORTED: dict[str, tuple[str, str]] = {}

_LOCK = threading.RLock()


# --------------------------------------------------------------------------------------------- #
# Shared plumbing
# --------------------------------------------------------------------------------------------- #


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed numpy's global RNG, torch and `random` for the peer call; restore them afterwards."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        np.random.seed(seed % 2**32)
        random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class _SeededNumpyRandom:
    def __init__(self, seed: int) -> None:
        self._seed = seed % 2**32

    def RandomState(self, seed=None):  # noqa: N802 (numpy's name)
        return np.random.RandomState(self._seed if seed is None else seed)

    def __getattr__(self, name):
        return getattr(np.random, name)


class _SeededNumpy:
    """numpy, except that `np.random.RandomState()` without a seed is seeded (for small-text BADGE)."""

    def __init__(self, seed: int) -> None:
        self.random = _SeededNumpyRandom(seed)

    def __getattr__(self, name):
        return getattr(np, name)


@contextlib.contextmanager
def _module_numpy(module, seed: int):
    original = module.np
    module.np = _SeededNumpy(seed)
    try:
        yield
    finally:
        module.np = original


class PeerStrategy(Strategy):
    """Base adapter: canonical order, seeding, and the Selection built from the peer's answer."""

    needs: frozenset = frozenset()

    def __init__(self, spec: str) -> None:
        self.name = spec
        self.needs = PEER_SPECS[spec]
        self.default_max_candidates = DEFAULT_MAX_CANDIDATES.get(spec)

    def score(self, inputs: ScoringInputs) -> np.ndarray:
        return self.select(inputs, len(inputs), 0).scores

    def select(self, inputs: ScoringInputs, batch_size: int, seed: int = 0) -> Selection:
        check_selection_args(self.name, inputs, batch_size)
        if inputs.multi_label:
            raise ValueError(f"{self.name}: peer strategies are single-label only (got multi-label inputs)")
        inputs.require(*sorted(self.needs), strategy=self.name)
        canon = np.argsort(inputs.ids, kind="stable")
        k = min(batch_size, len(inputs))
        with _LOCK, _seeded(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            picks, peer_scores = self._query(inputs, canon, k, seed)
        picks = canon[np.asarray(picks, dtype=np.int64)]  # canonical positions -> input positions
        if len(np.unique(picks)) != len(picks) or len(picks) != k:
            raise RuntimeError(f"{self.name}: peer returned {len(picks)} picks ({len(np.unique(picks))} distinct), "
                               f"expected {k}")
        if peer_scores is None:  # rank-derived: selected first, highest
            scores = np.zeros(len(inputs))
            scores[picks] = np.arange(k, 0, -1, dtype=np.float64)
        else:
            scores = np.empty(len(inputs))
            scores[canon] = np.asarray(peer_scores, dtype=np.float64)
        rest = np.setdiff1d(np.arange(len(inputs)), picks)
        rest = rest[seeded_order(scores[rest], seed, inputs.ids[rest])]
        order = inputs.ids[np.concatenate([picks, rest])]
        return Selection(self.name, inputs.ids, scores, inputs.ids[picks], order)

    def _query(self, inputs: ScoringInputs, canon: np.ndarray, k: int, seed: int):
        """(picks as canonical positions in peer order, peer scores in canonical order or None)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


# --------------------------------------------------------------------------------------------- #
# small-text: classifier and dataset facades
# --------------------------------------------------------------------------------------------- #


class _PoolDataset:
    """A small-text-style dataset over row positions: rows 0..N-1 the pool (canonical order), then the
    labeled set. `dataset[idx]` is the sub-dataset; iterating / `np.asarray` gives the row positions."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return int(self.rows[key])
        return _PoolDataset(self.rows[key])

    def __iter__(self):
        return iter(self.rows.tolist())

    def __array__(self, dtype=None, copy=None):
        return self.rows if dtype is None else self.rows.astype(dtype)


class _AnchoredHead(LinearHead):
    """Our LinearHead's parameters (head.weight (C, d), head.bias (C)), anchored to our head's output.

    Input rows are [h | log p] (features and our head's log-probabilities). forward returns
    log p + (W h + b) - stop_grad(W h + b): the value is our head's log-probabilities (softmax = p) and
    the gradient w.r.t. W, b is that of a linear head at our trained weights, since for cross-entropy
    d loss / d W = (softmax(z) - e_y) h^T and d loss / d b = softmax(z) - e_y depend on the weights
    only through p. So EGL's per-item, per-class backward passes see exactly our head's gradients.
    """

    def __init__(self, in_features: int, num_labels: int) -> None:
        super().__init__(in_features, num_labels, dropout=0.0)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        self.d = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, log_p = x[:, : self.d], x[:, self.d :]
        z = self.head(self.dropout(h))
        return log_p + z - z.detach()


class _HeadClassifier:
    """Answers small-text's classifier calls from our head's arrays (pool rows, then labeled rows)."""

    def __init__(self, probs: np.ndarray | None, features: np.ndarray | None, mc_probs: np.ndarray | None,
                 labeled_features: np.ndarray | None) -> None:
        self.probs, self.features, self.mc_probs = probs, features, mc_probs
        self.n_pool = len(probs if probs is not None else features if features is not None else mc_probs[0])
        self.labeled_features = labeled_features
        self._model = None

    def _pool_rows(self, dataset) -> np.ndarray:
        rows = np.asarray(dataset)
        if (rows >= self.n_pool).any():
            raise ValueError("the facade has predictions for pool rows only, not for labeled rows")
        return rows

    def predict_proba(self, dataset, dropout_sampling: int = 1):
        rows = self._pool_rows(dataset)
        if dropout_sampling <= 1:
            return self.probs[rows]
        if self.mc_probs is None or self.mc_probs.shape[0] != dropout_sampling:
            have = None if self.mc_probs is None else self.mc_probs.shape[0]
            raise ValueError(f"asked for {dropout_sampling} dropout samples, the head gave {have}")
        return self.mc_probs[:, rows].transpose(1, 0, 2)  # small-text: (N, T, C)

    def embed(self, dataset, return_proba: bool = False, pbar=None, **_kwargs):
        rows = np.asarray(dataset)
        lab = self.labeled_features if self.labeled_features is not None else np.zeros((0, self.features.shape[1]))
        allfeat = np.concatenate([self.features, np.asarray(lab, dtype=self.features.dtype)])
        emb = allfeat[rows]
        if not return_proba:
            return emb
        proba = np.full((len(rows), self.probs.shape[1]), np.nan)  # labeled rows: no prediction needed
        pool = rows < self.n_pool
        proba[pool] = self.probs[rows[pool]]
        return emb, proba

    # --- EGL's PyTorch-classifier surface -------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = _AnchoredHead(self.features.shape[1], self.probs.shape[1])
        return self._model

    def _create_collate_fn(self):
        x = torch.as_tensor(np.concatenate([self.features, np.log(np.clip(self.probs, 1e-300, None))], axis=1),
                            dtype=torch.float32)

        def collate(rows):
            return (x[torch.as_tensor(np.asarray(rows, dtype=np.int64))],)

        return collate


class SmallTextStrategy(PeerStrategy):
    """A small-text query strategy run on our head through `_HeadClassifier`."""

    def _query(self, inputs, canon, k, seed):
        import small_text.integrations.pytorch.query_strategies as st_torch
        import small_text.query_strategies as st
        from small_text.integrations.pytorch.query_strategies import strategies as st_torch_module
        from small_text.query_strategies import bayesian

        kind = self.name.split(":", 1)[1]
        n = len(inputs)
        probs = None if inputs.probs is None else np.asarray(inputs.probs, np.float64)[canon]
        feats = None if inputs.features is None else np.asarray(inputs.features)[canon]
        mc = None if inputs.mc_probs is None else np.asarray(inputs.mc_probs, np.float64)[:, canon]
        lab = inputs.labeled_features if "labeled_features" in self.needs else None
        if lab is not None and len(lab) == 0:
            lab = None
        if "labeled_features" in self.needs and lab is None:
            raise MissingInputError(f"strategy {self.name!r} needs labeled_features in ScoringInputs "
                                    "(small-text's greedy_coreset has no start without at least one labeled centre)")
        m = 0 if lab is None else len(lab)
        clf = _HeadClassifier(probs, feats, mc, lab)
        dataset = _PoolDataset(np.arange(n + m))
        unl, labeled = np.arange(n), np.arange(n, n + m)
        y = np.zeros(m, dtype=np.int64)  # labels of the labeled rows: unused by these strategies
        C = (probs if probs is not None else mc[0]).shape[1]

        if kind in ("breaking_ties", "prediction_entropy", "least_confidence"):
            qs = {"breaking_ties": st.BreakingTies, "prediction_entropy": st.PredictionEntropy,
                  "least_confidence": st.LeastConfidence}[kind]()
            picks = qs.query(clf, dataset, unl, labeled, y, n=k)
            # scores_ holds the raw confidence; the peer ranks ascending by qs.score(...), so negate that.
            raw = np.asarray(qs.scores_, dtype=np.float64)
            return picks, (-raw if qs.lower_is_better else raw)[:n]
        if kind == "greedy_coreset":
            qs = st.GreedyCoreset(distance_metric="euclidean", normalize=True)  # small-text's defaults
            return qs.query(clf, dataset, unl, labeled, y, n=k, pbar=None), None
        if kind == "badge":
            qs = st_torch.BADGE(num_classes=C)
            with _module_numpy(st_torch_module, seed):
                return qs.query(clf, dataset, unl, labeled, y, n=k, pbar=None), None
        if kind == "egl":
            qs = st_torch.ExpectedGradientLength(num_classes=C, device="cpu")
            with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar is hard-wired on
                picks = qs.query(clf, dataset, unl, labeled, y, n=k)
            return picks, (None if qs.scores_ is None else np.asarray(qs.scores_)[:n])
        if kind == "bald":
            T = mc.shape[0]
            qs = bayesian.BALD(dropout_samples=T)
            picks = qs.query(clf, dataset, unl, labeled, y, n=k)
            return picks, bayesian._bald(clf.predict_proba(dataset, dropout_sampling=T))
        raise ValueError(f"unknown small-text strategy {self.name!r}")


class BaalStrategy(PeerStrategy):
    """A baal heuristic over our MC-dropout samples, given as baal expects: [N, C, T]."""

    def _query(self, inputs, canon, k, seed):
        from baal.active.heuristics import BALD, BatchBALD
        from baal.active.heuristics.aliases import PowerBALD

        kind = self.name.split(":", 1)[1]
        pred = np.asarray(inputs.mc_probs, dtype=np.float64)[:, canon].transpose(1, 2, 0)
        n = pred.shape[0]
        if kind == "bald":
            ranks, scores = BALD().get_ranks(pred)
            return ranks[:k], scores
        if kind == "batchbald":
            # num_samples greedy steps after BALD's first pick: at most n picks in all.
            ranks, scores = BatchBALD(num_samples=min(k, n - 1)).get_ranks(pred)
            return ranks[:k], scores
        if kind == "powerbald":
            picks, distribution = PowerBALD(query_size=k, temperature=1.0).get_ranks(pred)
            return picks, distribution
        raise ValueError(f"unknown baal strategy {self.name!r}")


# --------------------------------------------------------------------------------------------- #
# scikit-activeml
# --------------------------------------------------------------------------------------------- #


def _skal_classifier_classes():
    """The two SkactivemlClassifier facades (built on first use: the service never imports skactiveml)."""
    from skactiveml.base import SkactivemlClassifier

    class _SkalProbs(SkactivemlClassifier):
        """predict_proba for rows [i] (X holds pool row positions) from our head's probabilities."""

        def __init__(self, probs=None, classes=None, missing_label=np.nan, cost_matrix=None, random_state=None):
            super().__init__(classes=classes, missing_label=missing_label, cost_matrix=cost_matrix,
                             random_state=random_state)
            self.probs = probs

        def fit(self, X, y, sample_weight=None):
            raise RuntimeError("the facade answers from our trained head; query with fit_clf=False")

        def predict_proba(self, X, **kwargs):
            return self.probs[np.asarray(X)[:, 0].astype(np.int64)]

        def predict(self, X, **kwargs):
            return self.predict_proba(X).argmax(axis=1)

    class _SkalHead(SkactivemlClassifier):
        """Our trained head run on any rows (DropQuery perturbs the inputs), via ScoringInputs.head_fn."""

        def __init__(self, head_fn=None, classes=None, missing_label=np.nan, cost_matrix=None, random_state=None):
            super().__init__(classes=classes, missing_label=missing_label, cost_matrix=cost_matrix,
                             random_state=random_state)
            self.head_fn = head_fn

        def fit(self, X, y, sample_weight=None):
            raise RuntimeError("the facade answers from our trained head; query with fit_clf=False")

        def predict_proba(self, X, **kwargs):
            z = np.asarray(self.head_fn(np.asarray(X)), dtype=np.float64)
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

        def predict(self, X, **kwargs):
            return np.asarray(self.head_fn(np.asarray(X))).argmax(axis=1)

    return _SkalProbs, _SkalHead


class SkactivemlStrategy(PeerStrategy):
    """A scikit-activeml 1.0.1 pool strategy with its own defaults, seeded with `seed`, on our head's arrays."""

    def _query(self, inputs, canon, k, seed):
        from skactiveml.pool import DropQuery, Falcun, ProbCover, TypiClust

        kind = self.name.split(":", 1)[1]
        n = len(inputs)
        if k == 0:
            return np.zeros(0, dtype=np.int64), None
        rs = seed % 2**32
        _SkalProbs, _SkalHead = _skal_classifier_classes()
        if kind == "falcun":
            probs = np.asarray(inputs.probs, np.float64)[canon]
            clf = _SkalProbs(probs, classes=np.arange(probs.shape[1]))
            X = np.arange(n, dtype=np.float64)[:, None]
            picks, util = Falcun(random_state=rs).query(X, np.full(n, np.nan), clf, fit_clf=False, batch_size=k,
                                                         return_utilities=True)
            return picks, util[0]
        if kind == "dropquery":
            rows = inputs.head_inputs if inputs.head_inputs is not None else inputs.features
            X = np.asarray(rows, np.float64)[canon]
            C = int(np.asarray(inputs.head_fn(X[:1])).shape[1])
            clf = _SkalHead(inputs.head_fn, classes=np.arange(C))
            qs = DropQuery(random_state=rs, cluster_algo_dict={"random_state": rs})
            return qs.query(X, np.full(n, np.nan), clf, fit_clf=False, batch_size=k), None
        feats = np.asarray(inputs.features, np.float64)[canon]
        lab = inputs.labeled_features
        lab = np.zeros((0, feats.shape[1])) if lab is None else np.asarray(lab, np.float64)
        X = np.concatenate([feats, lab])
        y = np.concatenate([np.full(n, np.nan), np.zeros(len(lab))])  # labeled rows: any label, never read
        cand = np.arange(n)
        if kind == "typiclust":
            return TypiClust(random_state=rs).query(X, y, candidates=cand, batch_size=k), None
        if kind == "probcover":
            # its default delta grid (0.2..2.0) is for unit-norm embeddings, as in the paper: normalise rows
            Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
            qs = ProbCover(n_classes=int(np.asarray(inputs.probs).shape[1]), random_state=rs)
            picks, util = qs.query(Xn, y, candidates=cand, batch_size=k, return_utilities=True)
            return picks, util[0][:n]
        raise ValueError(f"unknown scikit-activeml strategy {self.name!r}")


# --------------------------------------------------------------------------------------------- #
# Construction
# --------------------------------------------------------------------------------------------- #


def is_peer_spec(spec: str) -> bool:
    return spec.strip().split(":", 1)[0] in PEER_PREFIXES


def make_peer_strategy(spec: str) -> PeerStrategy:
    spec = spec.strip()
    if spec in UNSUPPORTED:
        err, why = UNSUPPORTED[spec]
        raise ValueError(f"{spec} cannot run faithfully on our head: {err} ({why})")
    if spec not in PEER_SPECS:
        raise ValueError(f"unknown peer strategy {spec!r}; choose from {', '.join(PEER_SPECS)}")
    prefix = spec.split(":", 1)[0]
    return {"smalltext": SmallTextStrategy, "baal": BaalStrategy, "skactiveml": SkactivemlStrategy}[prefix](spec)


def make_bench_strategy(spec: str, **disal_options) -> Strategy:
    """The benchmark's constructor: `smalltext:` / `baal:` specs to the peers, the rest to make_strategy."""
    if is_peer_spec(spec):
        return make_peer_strategy(spec)
    return make_strategy(spec, **disal_options)


__all__ = ["DEFAULT_MAX_CANDIDATES", "PEER_SPECS", "UNSUPPORTED", "BaalStrategy", "PeerStrategy", "SkactivemlStrategy",
           "SmallTextStrategy", "is_peer_spec",
           "make_bench_strategy", "make_peer_strategy"]
