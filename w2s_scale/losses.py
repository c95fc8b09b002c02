"""Training losses for weak-to-strong transfer (Burns et al. 2023; EleutherAI's w2s follow-up).

Conventions: ``logits`` is ``[B, K]`` for any number of classes ``K >= 2``, ``targets`` is ``[B, K]``
soft labels (rows sum to 1; for ``K = 2`` a ``[B]`` tensor is read as the probability of class 1),
``p = softmax(logits)``, ``step_frac`` is ``step / total_steps`` in ``[0, 1]``. Every loss returns the
MEAN over the ``B`` given examples of a per-example term, computed in float32.

K classes. xent, product, kl, entropy and entropy_min are written for any K. The losses whose binary
form is a rule on ``p[:, 0]`` or ``p[:, 1]`` keep that exact rule (the same operations, so binary results
are bit-for-bit what they were) and use its K-class generalisation when ``K > 2``:

* logconf hardens by class-wise thresholds (:func:`balanced_hardening`): the hardened one-hot labels
  hold exactly ``n_c`` examples of class c, ``n_c`` the largest-remainder rounding of ``N * m_c``
  (``m`` = mean weak label over the global batch), chosen to maximise ``sum_i log p_i,c(i)``. By LP
  duality that is ``c(i) = argmax_c (log p_ic - t_c)`` for per-class thresholds ``t_c``. For K = 2
  this is the reference's rule (openai/weak-to-strong's ``logconf_loss_fn``: ``threshold =
  quantile(p[:, 0], mean weak label of class 1)``, class 0 where ``p0 >= threshold``): with two
  classes, maximising the log-likelihood for fixed counts takes the ``n_0`` largest ``p0`` for class
  0, i.e. a threshold on ``p0``; the reference's count is ``n_1 = #{p0 < quantile}`` (what
  torch.quantile's interpolation gives), and K = 2 runs the reference's code itself.
* logconf_eleuther: example i's class is its class in :func:`balanced_hardening` over its rolling
  buffer (earlier predictions, then the batch up to i) with the prior's shares (uniform ``1/K``, the
  generalisation of EleutherAI's 0.5, or the batch's mean weak label); ``balance_batch`` centres the
  labels' log-probabilities on the batch mean (for K = 2: EleutherAI's log-odds centring).
* window: "uncertain" is ``max p < 1/K + radius`` (``0.5 + radius`` for K = 2); ``radius: midweak``
  is the median of ``max_c y_c - 1/K`` (``|y1 - 0.5|`` for K = 2).

Distributed exactness. The engine cuts one optimizer-step batch of ``N`` examples into equal
micro-batches (ranks x accumulation steps), averages the micro-batch losses and gradients. This equals
one device on the whole batch exactly when each loss is ``mean_i l_i`` and ``l_i`` depends on the rest
of the batch only through :class:`GlobalBatchStats`. That holds here:

* xent, product, kl, entropy, entropy_min: ``l_i`` depends on example ``i`` alone (entropy with
  ``balance_batch`` also on the global batch's mean label log-odds, from ``stats``).
* logconf: ``l_i`` depends on the batch through the hardening threshold(s), which are taken from
  ``stats`` (the student's ``p[:, 0]`` (K = 2) or ``p`` (K > 2) and the mean weak label over the
  WHOLE global batch, in the global batch's order: ``stats.positions`` says which rows a call sees).
* logconf_eleuther: example ``i``'s threshold is a quantile over a rolling buffer: the
  predictions of earlier steps (``stats.history0``) followed by the global batch's own up to and
  including position ``i`` in the global batch's fixed order (``stats.positions``), so it does not
  depend on how the batch is cut over ranks and accumulation steps.
* window: the mask uses example ``i``'s own prediction, and the masked sum is divided by ``B`` (not by
  the number of qualifying examples), so ``l_i = 1[max p_i < 0.5 + r] * CE_i``. Dividing by the
  qualifying count would weight micro-batches unequally and break the equivalence. EleutherAI also
  divides by ``B``.

To build ``stats`` the engine must know ``p`` of every example of the global batch before the
backward passes: e.g. a ``torch.no_grad()`` forward over the step's micro-batches (parameters do not
change within an accumulation window), then :func:`gather_global_stats`. With dropout on, or with
kernels whose numerics depend on the batch shape, that pre-pass can differ slightly from the training
forward; only an example lying exactly on the threshold could then flip.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from w2s_scale import distributed

__all__ = [
    "GlobalBatchStats", "LossSpec", "LOSSES", "PredictionHistory", "compute_loss",
    "gather_global_stats", "label_logodds_mean", "needs_global_stats", "resolve_params",
    "logconf_coef", "logconf_threshold", "xent_loss", "product_loss", "logconf_loss", "logconf_eleuther_loss",
    "entropy_loss", "entropy_min_loss", "window_loss", "kl_loss", "balanced_hardening",
    "class_quotas",
]

# EleutherAI's label log-odds use this epsilon (balance_batch)
_LOGODDS_EPS = 1e-7
# the longest rolling buffer logconf_eleuther may ask for (the history kept across steps)
MAX_BUFFER = 4096


@dataclass(frozen=True)
class GlobalBatchStats:
    """Statistics of the WHOLE optimizer-step batch: all ranks, all accumulation micro-batches."""

    probs0: torch.Tensor  # [N] the student's own p[:, 0] for all N examples (detached)
    target_mean1: float   # mean of soft targets[:, 1] over the global batch
    # mean over the global batch of log(y1 + eps) - log(1 - y1 + eps) (EleutherAI's balance_batch)
    target_logodds_mean1: float = 0.0
    # p[:, 0] of the examples of EARLIER optimizer steps, oldest first (logconf_eleuther's buffer)
    history0: Optional[torch.Tensor] = None
    # positions in the global batch (its fixed order) of the examples a loss call sees; None:
    # the call sees the whole global batch in order
    positions: Optional[torch.Tensor] = None
    # K classes (set by `build`, for every K; the binary rules read only the fields above):
    probs: Optional[torch.Tensor] = None        # [N, K] the student's p, global-batch order
    target_mean: Optional[torch.Tensor] = None  # [K] mean soft target per class (float64)
    target_logmean: Optional[torch.Tensor] = None  # [K] mean log(y_c + eps) (K-class balance_batch)
    # K > 2: results that depend only on the global batch, computed once per optimizer step and
    # shared by every loss call (each micro-batch) of that step
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return 2 if self.probs is None else int(self.probs.shape[1])

    @classmethod
    def build(cls, probs: torch.Tensor, targets: torch.Tensor,
              history0: Optional[torch.Tensor] = None) -> "GlobalBatchStats":
        """Stats of the global batch from the student's ``probs`` ``[N, K]`` and the soft
        ``targets`` ``[N, K]`` (means in the targets' dtype), in the global batch's order."""
        probs = probs.detach().float()
        targets = targets.detach()
        y1 = targets[:, 1]
        return cls(probs0=probs[:, 0], target_mean1=float(y1.mean()),
                   target_logodds_mean1=label_logodds_mean(y1), history0=history0, probs=probs,
                   target_mean=targets.double().mean(0),
                   target_logmean=torch.log(targets.double() + _LOGODDS_EPS).mean(0))

    @classmethod
    def from_batch(cls, logits: torch.Tensor, targets: torch.Tensor,
                   history0: Optional[torch.Tensor] = None) -> "GlobalBatchStats":
        """Stats of one local batch (what a single device on the whole batch would use)."""
        probs = torch.softmax(logits.detach().float(), dim=-1)
        return cls.build(probs, _k_col(targets, probs.shape[1]), history0)

    def for_positions(self, positions: Sequence[int] | torch.Tensor) -> "GlobalBatchStats":
        """The same stats for a loss call on the examples at these global-batch positions."""
        part = dataclasses.replace(self, positions=torch.as_tensor(positions, dtype=torch.long))
        object.__setattr__(part, "_cache", self._cache)  # one cache for the whole step
        return part

    def k_probs(self) -> torch.Tensor:
        if self.probs is None:
            raise ValueError("these GlobalBatchStats hold p[:, 0] only (binary); build them with "
                             "GlobalBatchStats.build(probs, targets) for K > 2 classes")
        return self.probs

    def history_rows(self) -> torch.Tensor:
        """What the prediction history keeps of this batch: p[:, 0] (K = 2, as always) or p."""
        return self.probs0 if self.num_classes == 2 else self.k_probs()


class PredictionHistory:
    """The student's p[:, 0] over the last optimizer steps (global batches, in order): the rolling
    buffer of logconf_eleuther. Every rank holds the same copy (it is built from gathered
    predictions) and it is saved in checkpoints, so a resumed run continues it exactly."""

    def __init__(self, values: Sequence[float] = (), capacity: int = MAX_BUFFER):
        self.capacity = capacity
        self.values = torch.tensor(list(values)[-capacity:], dtype=torch.float32)

    def push(self, rows: torch.Tensor) -> None:
        """Append ``p[:, 0]`` ``[N]`` (K = 2) or ``p`` ``[N, K]`` (K > 2: the buffer keeps rows)."""
        new = rows.detach().float().cpu()
        new = new.reshape(-1) if new.dim() < 2 else new
        if self.values.numel() == 0:
            self.values = self.values.reshape(0, *new.shape[1:])
        self.values = torch.cat([self.values, new])[-self.capacity:]

    def state(self) -> list[float]:
        return self.values.tolist()


def gather_global_stats(probs_parts: Sequence[torch.Tensor] | torch.Tensor,
                        targets_parts: Sequence[torch.Tensor] | torch.Tensor) -> GlobalBatchStats:
    """Global stats from this rank's micro-batches, gathered across ranks in rank order (identity
    on one process).

    ``probs_parts``: this rank's ``p[:, 0]`` (binary) or ``p`` ``[n, K]`` (one tensor or one per
    micro-batch, any grad state); ``targets_parts``: the matching soft targets. The binary threshold
    is a quantile, so order is irrelevant there; logconf_eleuther and K > 2 rules read the rows in
    the global batch's order (ranks' shares in rank order, as gathered here).
    """
    if isinstance(probs_parts, torch.Tensor):
        probs_parts = [probs_parts]
    if isinstance(targets_parts, torch.Tensor):
        targets_parts = [targets_parts]
    if probs_parts[0].dim() == 1:  # p[:, 0] of a binary task
        probs = torch.cat([p.detach().float().reshape(-1) for p in probs_parts])
        probs = torch.stack([probs, 1.0 - probs], dim=1)
    else:
        probs = torch.cat([p.detach().float() for p in probs_parts])
    y = torch.cat([_k_col(t, probs.shape[1]) for t in targets_parts])
    all_p = distributed.all_gather_tensor(probs)
    all_y = distributed.all_gather_tensor(y)
    return GlobalBatchStats.build(all_p, all_y.double())


# --------------------------------------------------------------------------- helpers

def _k_col(targets: torch.Tensor, k: int) -> torch.Tensor:
    """Soft targets as ``[B, k]`` float32; a ``[B]`` tensor (k = 2 only) is p(class 1)."""
    targets = torch.as_tensor(targets).detach().float()
    if targets.dim() == 1 and k == 2:
        return torch.stack([1.0 - targets, targets], dim=1)
    if targets.dim() != 2 or targets.shape[1] != k:
        shape = "[B, 2] (or [B])" if k == 2 else f"[B, {k}]"
        raise ValueError(f"targets must be {shape} (logits and targets both [B, K], K >= 2); "
                         f"got shape {tuple(targets.shape)}")
    return targets


def _two_col(targets: torch.Tensor) -> torch.Tensor:
    return _k_col(targets, 2)


def _logodds(y1: torch.Tensor) -> torch.Tensor:
    return torch.log(y1 + _LOGODDS_EPS) - torch.log(1 - y1 + _LOGODDS_EPS)


def label_logodds_mean(y1: torch.Tensor) -> float:
    """Mean log-odds of soft labels p(class 1), EleutherAI's balance_batch centre."""
    return float(_logodds(torch.as_tensor(y1).double()).mean())


def _balanced(y: torch.Tensor, logodds_mean1: float) -> torch.Tensor:
    """EleutherAI's balance_batch: labels' log-odds centred on the (global) batch mean."""
    y1 = torch.sigmoid(_logodds(y[:, 1]) - logodds_mean1)
    return torch.stack([1.0 - y1, y1], dim=1)


def _eleuther_coef(step: int, aux_coef: float, warmup_steps: float) -> float:
    """EleutherAI's warm-up: linear over optimizer steps (its Trainer's global_step, from 0)."""
    if warmup_steps <= 0:
        return float(aux_coef)
    return float(aux_coef) * min(1.0, float(step) / float(warmup_steps))


def _balanced_k(y: torch.Tensor, logmean: torch.Tensor) -> torch.Tensor:
    """K-class balance_batch: log-probabilities centred per class on the (global) batch mean, then
    renormalised. For K = 2 this is the log-odds centring of :func:`_balanced`."""
    logy = torch.log(y.double() + _LOGODDS_EPS) - logmean.to(y.device)
    return torch.softmax(logy, dim=-1).float()


def _prep(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be [B, K] with K >= 2 classes; got shape {tuple(logits.shape)}")
    y = _k_col(targets, logits.shape[1]).to(logits.device)
    if y.shape[0] != logits.shape[0]:
        raise ValueError(f"logits and targets disagree on B: {logits.shape[0]} vs {y.shape[0]}")
    return logits.float(), y


def _soft_ce(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy -sum_c target_c log p_c, shape [B]."""
    return -(target * logp).sum(dim=-1)


WARMUPS = ("linear", "reference")


def logconf_coef(step_frac: float, aux_coef: float = 0.5, warmup_frac: float = 0.1,
                 warmup: str = "linear") -> float:
    """The auxiliary weight at ``step_frac``.

    ``linear`` (default): aux_coef * min(1, step_frac / warmup_frac), a ramp to aux_coef.
    ``reference``: what openai/weak-to-strong computes,
    ``aux_coef * (1 if step_frac > warmup_frac else step_frac)``: at most aux_coef * warmup_frac
    during warm-up, then a jump to aux_coef (configs/reference/ use it; docs/reference.md says
    why linear stays the default).
    """
    if warmup not in WARMUPS:
        raise ValueError(f"warmup must be one of {WARMUPS}; got {warmup!r}")
    step_frac = max(0.0, float(step_frac))
    if warmup == "reference":
        return float(aux_coef) * (1.0 if step_frac > float(warmup_frac) else step_frac)
    if warmup_frac <= 0:
        return float(aux_coef)
    return float(aux_coef) * min(1.0, step_frac / float(warmup_frac))


def logconf_threshold(probs0: torch.Tensor, target_mean1: float) -> torch.Tensor:
    """Quantile of p[:, 0] at q = mean weak label of class 1 (linear interpolation, as torch.quantile).

    Examples with p0 >= threshold harden to class 0, the rest to class 1, so about a fraction
    ``target_mean1`` of the batch hardens to class 1: the hardened labels keep the weak labels'
    class balance.
    """
    q = min(1.0, max(0.0, float(target_mean1)))
    return torch.quantile(probs0.detach().float().reshape(-1), q)


def class_quotas(class_mean: Sequence[float] | torch.Tensor, n: int) -> list[int]:
    """How many of ``n`` examples each class gets: ``n * m_c`` (``m`` renormalised to sum 1)
    rounded by largest remainder, so the counts sum to ``n``; equal remainders go to the lower
    class index (deterministic on every rank)."""
    m = torch.as_tensor(class_mean, dtype=torch.float64).clamp(min=0.0)
    total = float(m.sum())
    m = m / total if total > 0 else torch.full_like(m, 1.0 / len(m))
    exact = m * n
    counts = torch.floor(exact).long()
    short = n - int(counts.sum())
    order = sorted(range(len(m)), key=lambda c: (-float(exact[c] - counts[c]), c))
    for c in order[:short]:
        counts[c] += 1
    return counts.tolist()


def balanced_hardening(probs: torch.Tensor, quotas: Sequence[int]) -> torch.Tensor:
    """Hardened classes ``[N]`` of the student's ``probs`` ``[N, K]`` with exactly ``quotas[c]``
    examples in class c, maximising ``sum_i log p_i,c(i)``: the class-wise thresholds of logconf for
    K classes (by LP duality, ``c(i) = argmax_c log p_ic - t_c`` for some thresholds ``t``). For
    K = 2 with ``n_1 = #{p0 < threshold}`` it gives the reference's ``p0 >= threshold -> class 0``
    (tests/test_losses_kclass.py checks it). Solved exactly as an assignment of the N examples to
    N class slots (scipy's linear_sum_assignment), deterministic for given inputs."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    p = probs.detach().double().cpu().numpy()
    if sum(quotas) != p.shape[0] or len(quotas) != p.shape[1]:
        raise ValueError(f"quotas {list(quotas)} do not fit probs of shape {p.shape}")
    slots = np.repeat(np.arange(p.shape[1]), np.asarray(quotas, dtype=int))
    cost = -np.log(np.clip(p, 1e-300, None))[:, slots]
    rows, cols = linear_sum_assignment(cost)
    classes = np.empty(p.shape[0], dtype=np.int64)
    classes[rows] = slots[cols]
    return torch.from_numpy(classes)


def _kclass_logconf_classes(stats: GlobalBatchStats) -> torch.Tensor:
    """logconf's hardened class of every example of the global batch (K > 2), once per step."""
    if "logconf" not in stats._cache:
        probs = stats.k_probs()
        stats._cache["logconf"] = balanced_hardening(
            probs, class_quotas(stats.target_mean, probs.shape[0]))
    return stats._cache["logconf"]


def _kclass_eleuther_classes(stats: GlobalBatchStats, size: int, prior: Optional[torch.Tensor]
                             ) -> torch.Tensor:
    """logconf_eleuther's hardened class of every example of the global batch (K > 2): example
    i's class in the balanced hardening of its rolling buffer (earlier steps' predictions, then
    this batch's up to and including i, the last ``size`` kept), with the prior's class shares
    (``None``: uniform). Computed once per step for the whole global batch."""
    key = ("eleuther", size, None if prior is None else tuple(prior.tolist()))
    if key not in stats._cache:
        probs = stats.k_probs().float().cpu()
        k = probs.shape[1]
        history = stats.history0 if stats.history0 is not None else torch.zeros(0, k)
        if history.numel() and (history.dim() != 2 or history.shape[1] != k):
            raise ValueError(f"logconf_eleuther: the prediction history holds rows of shape "
                             f"{tuple(history.shape[1:])}, not [{k}] (a binary history for K = {k}?)")
        stream = torch.cat([history.reshape(-1, k).float().cpu(), probs])
        shares = torch.full((k,), 1.0 / k) if prior is None else prior
        out = []
        for i in range(len(probs)):
            end = len(history) + i + 1
            window = stream[max(0, end - size): end]
            out.append(int(balanced_hardening(window, class_quotas(shares, len(window)))[-1]))
        stats._cache[key] = torch.tensor(out, dtype=torch.long)
    return stats._cache[key]


def _rows(stats: GlobalBatchStats, n: int) -> torch.Tensor:
    positions = (torch.arange(n) if stats.positions is None else stats.positions).cpu()
    if len(positions) != n:
        raise ValueError(f"stats.positions holds {len(positions)} positions for {n} examples")
    return positions


# --------------------------------------------------------------------------- losses

def xent_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float = 0.0,
              stats: Optional[GlobalBatchStats] = None) -> torch.Tensor:
    """Cross-entropy of softmax(logits) against the soft targets."""
    z, y = _prep(logits, targets)
    return _soft_ce(F.log_softmax(z, dim=-1), y).mean()


def product_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float = 0.0,
                 stats: Optional[GlobalBatchStats] = None, alpha: float = 1.0,
                 beta: float = 1.0) -> torch.Tensor:
    """CE against q ∝ p^beta * y^alpha (renormalised, detached); computed in log space."""
    z, y = _prep(logits, targets)
    logp = F.log_softmax(z, dim=-1)
    # xlogy(alpha, y) = alpha*log(y) with 0 when alpha == 0 (so y^0 = 1 even at y = 0)
    log_q = torch.log_softmax(float(beta) * logp.detach() + torch.xlogy(float(alpha), y),
                              dim=-1)
    q = log_q.exp().detach()
    return _soft_ce(logp, q).mean()


def logconf_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float,
                 stats: Optional[GlobalBatchStats] = None, aux_coef: float = 0.5,
                 warmup_frac: float = 0.1, warmup: str = "linear") -> torch.Tensor:
    """Auxiliary confidence loss (Burns et al.): CE against (1-coef)*y + coef*hardened(p).

    threshold = quantile of the student's p[:, 0] at q = mean of y[:, 1], both over the GLOBAL batch
    (``stats``); with ``stats=None`` the local batch is used, which is the reference on one device.
    hardened = [1, 0] where p0 >= threshold else [0, 1] (the reference's semantics).
    K > 2: hardened = one-hot of :func:`balanced_hardening` over the global batch, with the weak
    labels' global class proportions as quotas (the module docstring gives the rule).
    """
    z, y = _prep(logits, targets)
    coef = logconf_coef(step_frac, aux_coef, warmup_frac, warmup)
    logp = F.log_softmax(z, dim=-1)
    if z.shape[1] > 2:
        if stats is None:
            stats = GlobalBatchStats.from_batch(z, y)
        classes = _kclass_logconf_classes(stats)[_rows(stats, len(z))]
        hardened = F.one_hot(classes, z.shape[1]).float().to(z.device)
        return _soft_ce(logp, (1.0 - coef) * y + coef * hardened).mean()
    p0 = logp.detach().exp()[:, 0]
    if stats is None:
        threshold = logconf_threshold(p0, float(y[:, 1].mean()))
    else:
        threshold = logconf_threshold(stats.probs0.to(z.device), stats.target_mean1)
    is0 = (p0 >= threshold).float()
    hardened = torch.stack([is0, 1.0 - is0], dim=1)
    target = (1.0 - coef) * y + coef * hardened
    return _soft_ce(logp, target).mean()


def logconf_eleuther_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float,
                          stats: Optional[GlobalBatchStats] = None, step: int = 0,
                          aux_coef: float = 0.5, warmup_steps: float = 100,
                          buffer_size: float = 32, balance_batch: float = 0,
                          batch_prior: float = 0) -> torch.Tensor:
    """EleutherAI's logconf: CE against (1-coef)*y + coef*hardened(p), hardened by a threshold
    taken from a ROLLING BUFFER of the student's last ``buffer_size`` predictions.

    Example i's threshold is the quantile at ``prior`` of the buffer as it stands after example
    i's own prediction was added: earlier steps' predictions (``stats.history0``) then this global
    batch's up to position i, last ``buffer_size`` kept. That is EleutherAI's buffer with its
    default one-example minibatches, made independent of ranks and accumulation.
    prior: 0.5 (EleutherAI's value whenever its minibatch holds one example, its default), or with
    ``batch_prior: 1`` the global batch's mean weak label (0.5 for a one-example batch).
    ``balance_batch: 1``: labels' log-odds centred on the global batch's mean, prior 0.5.
    Warm-up linear over ``warmup_steps`` optimizer steps.
    K > 2: example i's class in the balanced hardening of that buffer with the prior's class shares
    (uniform, or the global batch's mean weak label with ``batch_prior: 1``); ``balance_batch``
    centres the labels' log-probabilities per class, prior uniform.
    """
    z, y = _prep(logits, targets)
    logp = F.log_softmax(z, dim=-1)
    p0 = logp.detach().exp()[:, 0]
    if stats is None:
        stats = GlobalBatchStats.from_batch(z, y)
    positions = _rows(stats, len(p0))
    size = int(buffer_size)
    if not 1 <= size <= MAX_BUFFER:
        raise ValueError(f"logconf_eleuther: buffer_size must be in [1, {MAX_BUFFER}]; got {buffer_size}")
    if z.shape[1] > 2:
        prior_k = None
        if bool(balance_batch):
            y = _balanced_k(y, stats.target_logmean)
        elif bool(batch_prior) and len(stats.probs0) > 1:
            prior_k = stats.target_mean.float()
        classes = _kclass_eleuther_classes(stats, size, prior_k)[positions]
        hardened = F.one_hot(classes, z.shape[1]).float().to(z.device)
        coef = _eleuther_coef(step, aux_coef, warmup_steps)
        return _soft_ce(logp, (1.0 - coef) * y + coef * hardened).mean()
    if bool(balance_batch):
        y = _balanced(y, stats.target_logodds_mean1)
        prior = 0.5
    elif bool(batch_prior) and len(stats.probs0) > 1:
        prior = stats.target_mean1
    else:
        prior = 0.5
    history = stats.history0 if stats.history0 is not None else torch.zeros(0)
    stream = torch.cat([history.float().cpu(), stats.probs0.float().cpu()])
    thresholds = torch.stack([logconf_threshold(stream[max(0, len(history) + int(i) + 1 - size):
                                                       len(history) + int(i) + 1], prior)
                              for i in positions]).to(z.device)
    is0 = (p0 >= thresholds).float()
    hardened = torch.stack([is0, 1.0 - is0], dim=1)
    coef = _eleuther_coef(step, aux_coef, warmup_steps)
    return _soft_ce(logp, (1.0 - coef) * y + coef * hardened).mean()


def entropy_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float,
                 stats: Optional[GlobalBatchStats] = None, step: int = 0, aux_coef: float = 0.5,
                 warmup_steps: float = 100, balance_batch: float = 0) -> torch.Tensor:
    """EleutherAI's "entropy": logconf with the student's soft, unhardened predictions, taken
    DETACHED: CE(p, (1-coef)*y + coef*stopgrad(p)).

    The value is (1-coef)*CE(y, p) + coef*H(p), but the auxiliary term has ZERO gradient
    (d/dz CE(stopgrad(p), softmax z) = p - p = 0): it trains exactly like xent scaled by
    (1-coef). Warm-up linear over ``warmup_steps`` optimizer steps; optional balance_batch (label
    log-odds centred on the global batch's mean), as EleutherAI's.
    """
    z, y = _prep(logits, targets)
    if bool(balance_batch) and z.shape[1] > 2:
        y = _balanced_k(y, (stats or GlobalBatchStats.from_batch(z, y)).target_logmean)
    elif bool(balance_batch):
        y = _balanced(y, (stats or GlobalBatchStats.from_batch(z, y)).target_logodds_mean1)
    coef = _eleuther_coef(step, aux_coef, warmup_steps)
    logp = F.log_softmax(z, dim=-1)
    return _soft_ce(logp, (1.0 - coef) * y + coef * logp.detach().exp()).mean()


def entropy_min_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float,
                     stats: Optional[GlobalBatchStats] = None, aux_coef: float = 0.5,
                     warmup_frac: float = 0.1, warmup: str = "linear") -> torch.Tensor:
    """Entropy minimisation (ours): (1-coef)*CE(y, p) + coef*H(p) with the gradient THROUGH
    H(p), which pushes the student towards confident predictions, the effect logconf gets from
    hardening. Same value as ``entropy``, different gradient. Warm-up as logconf's.
    """
    z, y = _prep(logits, targets)
    coef = logconf_coef(step_frac, aux_coef, warmup_frac, warmup)
    logp = F.log_softmax(z, dim=-1)
    ent = -(logp.exp() * logp).sum(dim=-1)
    return ((1.0 - coef) * _soft_ce(logp, y) + coef * ent).mean()


def window_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float = 0.0,
                stats: Optional[GlobalBatchStats] = None, radius: float = 0.15) -> torch.Tensor:
    """CE only on examples where the STUDENT is uncertain: max p < 0.5 + radius (EleutherAI);
    for K classes max p < 1/K + radius.

    EleutherAI's confidence window uses the student's own predictions (not the weak label's
    confidence) and divides the masked sum by the batch size B. We do the same: the loss is
    mean_i 1[max p_i < 0.5 + radius] * CE_i, a per-example mean, so micro-batching is exact.
    With no qualifying example it is 0 and still attached to the graph (0 * CE), which DeepSpeed
    needs to run a backward pass.
    """
    z, y = _prep(logits, targets)
    logp = F.log_softmax(z, dim=-1)
    floor = 0.5 if z.shape[1] == 2 else 1.0 / z.shape[1]
    mask = (logp.detach().exp().max(dim=-1).values < floor + float(radius)).float()
    return (mask * _soft_ce(logp, y)).mean()


def kl_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float = 0.0,
            stats: Optional[GlobalBatchStats] = None) -> torch.Tensor:
    """KL(y || p) = sum_c y_c (log y_c - log p_c), with 0 log 0 = 0. Same gradient as xent."""
    z, y = _prep(logits, targets)
    logp = F.log_softmax(z, dim=-1)
    return (torch.xlogy(y, y) - y * logp).sum(dim=-1).mean()


# --------------------------------------------------------------------------- registry

LossFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class LossSpec:
    fn: LossFn  # fn(logits, targets, step_frac, stats, **params) -> scalar (mean over B)
    needs_global_stats: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""
    # the words a parameter may take instead of (or, with a word default, as) its number
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    uses_step: bool = False  # fn also takes step= (the optimizer step, from 0)
    # the numbers each param may take, in interval notation ("[0, 1)", "[0, inf)") or as a set
    # ("{0, 1}"); checked before any run starts (w2s_scale/preflight.py)
    ranges: Mapping[str, str] = field(default_factory=dict)
    # raised when a name's meaning changes, so that runs finished under the old meaning are
    # stale (in the run hash), never reused as the new loss's results
    revision: int = 0


LOSSES: dict[str, LossSpec] = {
    "xent": LossSpec(xent_loss, False, {}, "cross-entropy against the soft weak labels"),
    "product": LossSpec(product_loss, False, {"alpha": 1.0, "beta": 1.0},
                        "CE against q ∝ p^beta y^alpha (detached)",
                        ranges={"alpha": "[0, inf)", "beta": "[0, inf)"}),
    "logconf": LossSpec(logconf_loss, True,
                        {"aux_coef": 0.5, "warmup_frac": 0.1, "warmup": "linear"},
                        "auxiliary confidence loss (Burns et al.), global-batch hardening threshold",
                        choices={"warmup": WARMUPS},
                        ranges={"aux_coef": "[0, 1]", "warmup_frac": "[0, 1)"}),
    "logconf_eleuther": LossSpec(
        logconf_eleuther_loss, True,
        {"aux_coef": 0.5, "warmup_steps": 100, "buffer_size": 32, "balance_batch": 0,
         "batch_prior": 0},
        "EleutherAI's logconf: threshold from a rolling buffer of the last predictions",
        uses_step=True, ranges={"aux_coef": "[0, 1]", "warmup_steps": "[0, inf)",
                                "buffer_size": "[1, inf)", "balance_batch": "{0, 1}",
                                "batch_prior": "{0, 1}"}),
    "entropy": LossSpec(entropy_loss, False,
                        {"aux_coef": 0.5, "warmup_steps": 100, "balance_batch": 0},
                        "EleutherAI's entropy: CE against (1-coef) y + coef stopgrad(p); trains "
                        "like (1-coef) xent", uses_step=True,
                        ranges={"aux_coef": "[0, 1]", "warmup_steps": "[0, inf)",
                                "balance_batch": "{0, 1}"},
                        revision=1),  # 0: our entropy minimisation, now entropy_min
    "entropy_min": LossSpec(entropy_min_loss, False,
                            {"aux_coef": 0.5, "warmup_frac": 0.1, "warmup": "linear"},
                            "entropy minimisation: (1-coef) CE(y, p) + coef H(p), gradient "
                            "through H", choices={"warmup": WARMUPS},
                            ranges={"aux_coef": "[0, 1]", "warmup_frac": "[0, 1)"}),
    "window": LossSpec(window_loss, False, {"radius": 0.15},
                       "CE only where the student's max p < 0.5 + radius, divided by B; radius "
                       "midweak = median |weak p1 - 0.5| over the training set",
                       choices={"radius": ("midweak",)},
                       ranges={"radius": "(0, 0.5)"}),  # 0: max p < 0.5 never holds
    "kl": LossSpec(kl_loss, False, {}, "KL(y || p)"),
}


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """ValueError naming the parameter when ``params`` does not fit loss ``name``."""
    spec = LOSSES[name]
    unknown = set(params) - set(spec.defaults)
    if unknown:
        raise ValueError(f"loss {name!r}: unknown params {sorted(unknown)}; "
                         f"accepted: {sorted(spec.defaults)}")
    for key, value in params.items():
        words = spec.choices.get(key, ())
        if isinstance(value, str) and value not in words:
            allowed = f"one of {list(words)}" if words else "a number"
            raise ValueError(f"loss {name!r}: param {key} is {value!r}; give {allowed}")
        if not isinstance(value, str) and isinstance(spec.defaults[key], str):
            raise ValueError(f"loss {name!r}: param {key} is {value!r}; give one of {list(words)}")


def needs_global_stats(name: str, params: Optional[Mapping[str, Any]] = None) -> bool:
    """Whether the engine must build GlobalBatchStats for this loss (a pre-pass over the batch)."""
    return LOSSES[name].needs_global_stats or bool((params or {}).get("balance_batch", 0))


def resolve_params(name: str, params: Optional[Mapping[str, Any]], targets) -> dict[str, Any]:
    """``params`` with words that stand for numbers of the training set replaced by the numbers:
    ``radius: midweak`` = median |weak p1 - 0.5| over ``targets`` (EleutherAI's rule); for K > 2
    classes the median of max_c y_c - 1/K."""
    params = dict(params or {})
    if params.get("radius") == "midweak":
        y = torch.as_tensor(targets)
        if y.dim() == 2 and y.shape[1] > 2:
            params["radius"] = float((y.double().max(dim=1).values - 1.0 / y.shape[1]).median())
            return params
        y1 = _two_col(y)[:, 1].double()
        # torch's median is the lower middle value; EleutherAI takes torch's median too
        params["radius"] = float((y1 - 0.5).abs().median())
    return params


def compute_loss(name: str, logits: torch.Tensor, targets: torch.Tensor, step_frac: float,
                 stats: Optional[GlobalBatchStats] = None,
                 params: Optional[Mapping[str, Any]] = None, step: int = 0) -> torch.Tensor:
    """Look up ``name`` in LOSSES, merge ``params`` over its defaults, and evaluate it.
    ``step``: the optimizer step (from 0), for losses that warm up over steps (EleutherAI's)."""
    try:
        spec = LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None
    params = dict(params or {})
    check_params(name, params)
    merged = {**spec.defaults, **params}
    if merged.get("radius") == "midweak":
        raise ValueError("radius: midweak must be resolved on the training set first "
                         "(losses.resolve_params)")
    extra = {"step": step} if spec.uses_step else {}
    return spec.fn(logits, targets, step_frac, stats, **extra, **merged)


# --------------------------------------------------------------------------- reverse losses
# Yao et al. 2025 ("Revisiting Weak-to-Strong Generalization in Theory and Practice: Reverse KL vs.
# Forward KL") train the student with the divergence taken the other way round: the student's own
# distribution p weighs the log of the weak labels q. Wang et al. 2019 (symmetric cross-entropy)
# define the reverse cross-entropy with log 0 := A, A = -4. These losses take [B, K] logits and
# [B, K] soft targets for any K >= 2 (a [B] target is read as p(class 1) of two classes).

RCE_LOG_ZERO = -4.0  # Wang et al. 2019's A: log 0 := A in the reverse cross-entropy


def _floored_log(q: torch.Tensor, log_zero: float) -> torch.Tensor:
    """log q with a floor at ``log_zero`` (so log 0 = log_zero, finite), as Wang et al.'s A.
    The floor also applies to 0 < q < exp(log_zero): the clipped log stays continuous in q."""
    return torch.clamp(torch.log(q), min=float(log_zero))


def rce_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float = 0.0,
             stats: Optional[GlobalBatchStats] = None, log_zero: float = RCE_LOG_ZERO) -> torch.Tensor:
    """Reverse cross-entropy (Wang et al. 2019; Yao et al. 2025): the student's p is the "target",
    the weak labels' log the "prediction":

        RCE_i = -sum_c p_c * max(log q_c, A),   A = ``log_zero`` (default -4, Wang et al.'s).

    The gradient flows through p only (q is data). On one-hot labels RCE_i = -A * (1 - p_label),
    a bounded loss (Wang et al.'s noise-robustness argument).
    """
    z, q = _prep(logits, targets)
    p = torch.softmax(z, dim=-1)
    return -(p * _floored_log(q, log_zero)).sum(dim=-1).mean()


def reverse_kl_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float = 0.0,
                    stats: Optional[GlobalBatchStats] = None,
                    log_zero: float = RCE_LOG_ZERO) -> torch.Tensor:
    """Reverse KL (Yao et al. 2025): KL(p || q) of the student p from the weak labels q,

        RKL_i = sum_c p_c * (log p_c - max(log q_c, A)) = RCE_i - H(p_i),

    mode-seeking ("zero-forcing"): the student may drop classes the weak labels give mass to.
    log q is floored at A = ``log_zero`` (default -4) as in rce, so a weak label of exactly 0 (or 1)
    gives a finite loss.
    """
    z, q = _prep(logits, targets)
    logp = F.log_softmax(z, dim=-1)
    return (logp.exp() * (logp - _floored_log(q, log_zero))).sum(dim=-1).mean()


def sce_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float = 0.0,
             stats: Optional[GlobalBatchStats] = None, alpha: float = 0.1, beta: float = 1.0,
             log_zero: float = RCE_LOG_ZERO) -> torch.Tensor:
    """Symmetric cross-entropy (Wang et al. 2019): SCE_i = alpha * CE_i + beta * RCE_i with
    CE_i = -sum_c q_c log p_c and RCE_i as in rce. Defaults alpha = 0.1, beta = 1.0, A = -4
    (Wang et al.'s CIFAR-10 setting; they tune alpha and beta per data set).
    """
    z, q = _prep(logits, targets)
    logp = F.log_softmax(z, dim=-1)
    ce = -(q * logp).sum(dim=-1)
    rce = -(logp.exp() * _floored_log(q, log_zero)).sum(dim=-1)
    return (float(alpha) * ce + float(beta) * rce).mean()


LOSSES.update({
    "rce": LossSpec(rce_loss, False, {"log_zero": RCE_LOG_ZERO},
                    "reverse cross-entropy -sum p log q, log floored at A = log_zero "
                    "(Wang et al. 2019; Yao et al. 2025)",
                    ranges={"log_zero": "(-inf, 0)"}),
    "reverse_kl": LossSpec(reverse_kl_loss, False, {"log_zero": RCE_LOG_ZERO},
                           "reverse KL(p || q) of the student from the weak labels (Yao et al. "
                           "2025), log q floored at log_zero", ranges={"log_zero": "(-inf, 0)"}),
    "sce": LossSpec(sce_loss, False, {"alpha": 0.1, "beta": 1.0, "log_zero": RCE_LOG_ZERO},
                    "symmetric cross-entropy alpha CE + beta RCE (Wang et al. 2019)",
                    ranges={"alpha": "[0, inf)", "beta": "[0, inf)", "log_zero": "(-inf, 0)"}),
})


# --------------------------------------------------------------------------- hard weak labels
# The automated-W2S testbed (2026) trains its vanilla student on the weak model's most likely
# label, not on its distribution: cross-entropy against the argmax of the weak labels.

def xent_hard_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float = 0.0,
                   stats: Optional[GlobalBatchStats] = None) -> torch.Tensor:
    """Cross-entropy against the one-hot argmax of the soft targets (a tie goes to the lowest
    class, as torch.argmax and Python's list.index(max) both choose)."""
    z, y = _prep(logits, targets)
    hard = F.one_hot(y.argmax(dim=-1), z.shape[1]).to(z.dtype)
    return _soft_ce(F.log_softmax(z, dim=-1), hard).mean()


LOSSES["xent_hard"] = LossSpec(xent_hard_loss, False, {},
                               "cross-entropy against the weak labels' argmax (hard labels)")
