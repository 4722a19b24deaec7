"""DISAL: dynamic influence scoring along the checkpoint trajectory (ACM MM 2024), reconstructed.

See docs/method.md and ../shared/METHOD.md. Everything here is a pure function over arrays:

- a trajectory of checkpoints theta_0..theta_K gives directions d_k (option `direction`);
- `head_logit_tangents` turns a linear head's checkpoints and the penultimate features into the
  logits z_k and their directional derivatives t_k = dz/de (theta_k + e d_k) -- the closed form;
  `disal.training.jvp` produces the same two arrays for any parameter set with torch.func.jvp;
- `disal_scores` combines them: the gradient of the per-sample loss projected on d_k is r~ . t_k,
  where r~ = dl~/dz is the residual of the pseudo-labelled loss plus the dynamic term.

Why the residual form: for any parameter subset, <grad_theta l(x), d> = (dl/dz) . (J_theta z) d, and
dl/dz has the closed form below for cross-entropy + KL, so one forward(-mode) pass per checkpoint
scores a whole batch with no per-sample gradients.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .base import ScoringInputs, Strategy

DIRECTIONS = ("accumulated", "segment", "remaining")
DYNAMICS = ("mean-prediction", "previous", "none")
SIGNS = ("descent", "ascent")
CHECKPOINT_WEIGHTS = ("uniform", "lr")


@dataclass(frozen=True)
class DisalOptions:
    """The options of METHOD.md. Defaults are the measured winners recorded in docs/method.md."""

    direction: str = "accumulated"
    dynamic: str = "mean-prediction"
    lam: float = 0.3
    sign: str = "descent"
    weights: str = "uniform"
    last_checkpoint_only: bool = False

    def __post_init__(self) -> None:
        for value, allowed, name in (
            (self.direction, DIRECTIONS, "direction"),
            (self.dynamic, DYNAMICS, "dynamic"),
            (self.sign, SIGNS, "sign"),
            (self.weights, CHECKPOINT_WEIGHTS, "weights"),
        ):
            if value not in allowed:
                raise ValueError(f"DISAL option {name}={value!r} is not one of {', '.join(allowed)}")
        if not (self.lam >= 0):
            raise ValueError(f"DISAL option lam must be >= 0, got {self.lam}")

    @property
    def effective_lam(self) -> float:
        return 0.0 if self.dynamic == "none" else float(self.lam)

    def as_dict(self) -> dict:
        return asdict(self)


STATIC_INFLUENCE = DisalOptions(
    direction="accumulated", dynamic="none", lam=0.0, sign=DisalOptions().sign, last_checkpoint_only=True
)


def direction_deltas(checkpoints: np.ndarray, kind: str) -> np.ndarray:
    """d_k for k = 0..K from stacked checkpoints (K+1, ...): a zero d_k means 'no direction here'."""
    if kind not in DIRECTIONS:
        raise ValueError(f"direction {kind!r} is not one of {', '.join(DIRECTIONS)}")
    cps = np.asarray(checkpoints, dtype=np.float64)
    if kind == "accumulated":
        return cps - cps[0:1]
    if kind == "segment":
        out = np.zeros_like(cps)
        out[1:] = cps[1:] - cps[:-1]
        return out
    return cps[-1:] - cps


def head_logit_tangents(
    features: np.ndarray, weights: np.ndarray, biases: np.ndarray, direction: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed form for a linear head z = W h + b over its checkpoints.

    features: (N, d) if the encoder is frozen, else (K+1, N, d) (the features at each checkpoint);
    weights: (K+1, C, d); biases: (K+1, C). Returns logits (K+1, N, C), tangents (K+1, N, C) with
    t_k = D_W,k h_k + D_b,k, and the direction norms (K+1,).
    """
    W = np.asarray(weights, dtype=np.float64)
    b = np.asarray(biases, dtype=np.float64)
    h = np.asarray(features, dtype=np.float64)
    k1 = W.shape[0]
    if h.ndim == 2:
        h = np.broadcast_to(h, (k1,) + h.shape)
    dW = direction_deltas(W, direction)
    db = direction_deltas(b, direction)
    logits = np.einsum("knd,kcd->knc", h, W) + b[:, None, :]
    tangents = np.einsum("knd,kcd->knc", h, dW) + db[:, None, :]
    norms = np.sqrt((dW**2).sum(axis=(1, 2)) + (db**2).sum(axis=1))
    return logits, tangents, norms


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Softmax over the last axis, or elementwise sigmoid for multi-label heads."""
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def pseudo_targets(probs: np.ndarray, multi_label: bool) -> np.ndarray:
    """y_k: one-hot argmax (softmax) or probabilities thresholded at 0.5 (sigmoid)."""
    if multi_label:
        return (probs > 0.5).astype(probs.dtype)
    y = np.zeros_like(probs)
    np.put_along_axis(y, probs.argmax(axis=-1)[..., None], 1.0, axis=-1)
    return y


def dynamic_references(probs: np.ndarray, dynamic: str) -> np.ndarray:
    """q_k for the dynamic term KL(q_k || p_theta): running mean of p_1..p_k, or p_{k-1}.

    At k = 0 there is no history, so q_0 = p_0 (the KL term and its gradient vanish there).
    """
    q = np.empty_like(probs)
    q[0] = probs[0]
    if dynamic == "previous":
        q[1:] = probs[:-1]
    else:
        q[1:] = np.cumsum(probs[1:], axis=0) / np.arange(1, len(probs))[:, None, None]
    return q


def disal_residuals(
    traj_logits: np.ndarray,
    dir_norms: np.ndarray,
    options: DisalOptions = DisalOptions(),
    lrs: np.ndarray | None = None,
    multi_label: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(r~, c): r~_k = dl~_k/dz (K+1, N, C) and c_k = w_k * sign / ||d_k|| (K+1,), 0 where d_k = 0.

    S(x) = sum_k c_k r~_k(x) . t_k(x). Shared by `disal_scores` and DISAL-batch, whose gradient
    embeddings are r~_k (x) h: the per-checkpoint gradients of the same loss.
    """
    z = np.asarray(traj_logits, dtype=np.float64)
    norms = np.asarray(dir_norms, dtype=np.float64)
    if z.ndim != 3 or len(norms) != z.shape[0]:
        raise ValueError(f"shape mismatch: logits {z.shape}, norms {norms.shape}")
    probs = probabilities(z, multi_label)
    y = pseudo_targets(probs, multi_label)
    lam = options.effective_lam
    sign = -1.0 if options.sign == "descent" else 1.0
    k1 = z.shape[0]
    if options.weights == "lr":
        if lrs is None:
            raise ValueError("DISAL weights='lr' needs the learning rates recorded with the trajectory")
        w = np.asarray(lrs, dtype=np.float64)
    else:
        w = np.ones(k1)
    q = dynamic_references(probs, options.dynamic) if lam > 0 else probs
    resid = (1.0 + lam) * probs - y - lam * q  # dl~/dz for CE(p, y) + lam * KL(q || p)
    scale = np.where(norms > 0, sign * w / np.where(norms > 0, norms, 1.0), 0.0)
    if options.last_checkpoint_only:
        scale[:-1] = 0.0
    return resid, scale


def disal_scores(
    traj_logits: np.ndarray,
    tangents: np.ndarray,
    dir_norms: np.ndarray,
    options: DisalOptions = DisalOptions(),
    lrs: np.ndarray | None = None,
    multi_label: bool = False,
) -> np.ndarray:
    """S(x) = sum_k w_k * sign * <grad_theta l~_k(x; theta_k), d_k> / ||d_k||  (one value per item).

    traj_logits, tangents: (K+1, N, C); dir_norms: (K+1,). Checkpoints whose direction is zero
    (k = 0 for `accumulated`/`segment`, k = K for `remaining`) contribute nothing.
    """
    z = np.asarray(traj_logits, dtype=np.float64)
    t = np.asarray(tangents, dtype=np.float64)
    if z.shape != t.shape or z.ndim != 3 or len(dir_norms) != z.shape[0]:
        raise ValueError(f"shape mismatch: logits {z.shape}, tangents {t.shape}, norms {np.shape(dir_norms)}")
    resid, scale = disal_residuals(z, dir_norms, options, lrs, multi_label)
    proj = (resid * t).sum(axis=-1)  # (K+1, N)
    return (scale[:, None] * proj).sum(axis=0)


class DISAL(Strategy):
    """Dynamic influence scoring: needs the trajectory's logits and tangents for options.direction."""

    def __init__(self, options: DisalOptions | None = None, name: str = "disal") -> None:
        self.options = options or DisalOptions()
        self.name = name

    def score(self, inputs: ScoringInputs) -> np.ndarray:
        inputs.require("traj_logits", strategy=self.name)
        d = self.options.direction
        if d not in inputs.traj_tangents:
            raise ValueError(f"{self.name}: no tangents for direction {d!r} in ScoringInputs")
        return disal_scores(inputs.traj_logits, inputs.traj_tangents[d], inputs.traj_dir_norms[d],
                            self.options, inputs.traj_lrs, inputs.multi_label)

    def __repr__(self) -> str:
        return f"DISAL({self.options})"


def reads_only_last_checkpoint(strategy) -> bool:
    """True for a DISAL whose score reads checkpoint K alone: last_checkpoint_only and no dynamic term
    (whose references would read the earlier checkpoints' predictions). Its trajectory then needs only
    theta_0 and theta_K, and its jvp only checkpoint K: the same scores at a fraction of the cost."""
    opts = getattr(strategy, "options", None)
    return isinstance(strategy, DISAL) and bool(opts.last_checkpoint_only) and opts.effective_lam == 0


class StaticInfluence(DISAL):
    """DISAL with K = 1 and lambda = 0: the projection at the final checkpoint on theta_K - theta_0."""

    def __init__(self, sign: str | None = None) -> None:
        base = STATIC_INFLUENCE if sign is None else DisalOptions(**{**STATIC_INFLUENCE.as_dict(), "sign": sign})
        super().__init__(base, name="static_influence")
