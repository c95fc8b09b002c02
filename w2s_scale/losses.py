"""Training losses for weak-to-strong transfer (Burns et al. 2023; EleutherAI's w2s follow-up).

Conventions: ``logits`` is ``[B, 2]``, ``targets`` is ``[B, 2]`` soft labels (rows sum to 1; a ``[B]``
tensor is read as the probability of class 1), ``p = softmax(logits)``, ``step_frac`` is
``step / total_steps`` in ``[0, 1]``. Every loss returns the MEAN over the ``B`` given examples of a
per-example term, computed in float32.

Distributed exactness. The engine cuts one optimizer-step batch of ``N`` examples into equal
micro-batches (ranks x accumulation steps), averages the micro-batch losses and gradients. This equals
one device on the whole batch exactly when each loss is ``mean_i l_i`` and ``l_i`` depends on the rest
of the batch only through :class:`GlobalBatchStats`. That holds here:

* xent, product, kl, entropy: ``l_i`` depends on example ``i`` alone.
* logconf: ``l_i`` depends on the batch through the hardening threshold, which is taken from
  ``stats`` (the student's ``p[:, 0]`` and the mean weak label over the WHOLE global batch).
* window: the mask uses example ``i``'s own prediction, and the masked sum is divided by ``B`` (not by
  the number of qualifying examples), so ``l_i = 1[max p_i < 0.5 + r] * CE_i``. Dividing by the
  qualifying count would weight micro-batches unequally and break the equivalence. EleutherAI also
  divides by ``B``.

To build ``stats`` the engine must know ``p[:, 0]`` of every example of the global batch before the
backward passes: e.g. a ``torch.no_grad()`` forward over the step's micro-batches (parameters do not
change within an accumulation window), then :func:`gather_global_stats`. With dropout on, or with
kernels whose numerics depend on the batch shape, that pre-pass can differ slightly from the training
forward; only an example lying exactly on the threshold could then flip.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "GlobalBatchStats", "LossSpec", "LOSSES", "compute_loss", "gather_global_stats",
    "logconf_coef", "logconf_threshold", "xent_loss", "product_loss", "logconf_loss",
    "entropy_loss", "window_loss", "kl_loss",
]


@dataclass(frozen=True)
class GlobalBatchStats:
    """Statistics of the WHOLE optimizer-step batch: all ranks, all accumulation micro-batches."""

    probs0: torch.Tensor  # [N] the student's own p[:, 0] for all N examples (detached)
    target_mean1: float   # mean of soft targets[:, 1] over the global batch

    @classmethod
    def from_batch(cls, logits: torch.Tensor, targets: torch.Tensor) -> "GlobalBatchStats":
        """Stats of one local batch (what a single device on the whole batch would use)."""
        probs0 = torch.softmax(logits.detach().float(), dim=-1)[:, 0]
        return cls(probs0=probs0, target_mean1=float(_two_col(targets)[:, 1].mean()))


def gather_global_stats(probs0_parts: Sequence[torch.Tensor] | torch.Tensor,
                        targets_parts: Sequence[torch.Tensor] | torch.Tensor) -> GlobalBatchStats:
    """Global stats from this rank's micro-batches, gathered across ranks (identity on one process).

    ``probs0_parts``: this rank's ``p[:, 0]`` (one tensor or one per micro-batch, any grad state);
    ``targets_parts``: the matching soft targets. The threshold is a quantile, so order is irrelevant.
    """
    from w2s_scale import distributed

    if isinstance(probs0_parts, torch.Tensor):
        probs0_parts = [probs0_parts]
    if isinstance(targets_parts, torch.Tensor):
        targets_parts = [targets_parts]
    probs0 = torch.cat([p.detach().float().reshape(-1) for p in probs0_parts])
    y1 = torch.cat([_two_col(t)[:, 1] for t in targets_parts])
    all_p0 = distributed.all_gather_tensor(probs0)
    all_y1 = distributed.all_gather_tensor(y1)
    return GlobalBatchStats(probs0=all_p0.detach(), target_mean1=float(all_y1.double().mean()))


# --------------------------------------------------------------------------- helpers

def _two_col(targets: torch.Tensor) -> torch.Tensor:
    targets = targets.detach().float()
    if targets.dim() == 1:
        return torch.stack([1.0 - targets, targets], dim=1)
    if targets.dim() != 2 or targets.shape[1] != 2:
        raise ValueError(f"targets must be [B, 2] (or [B]); got shape {tuple(targets.shape)}")
    return targets


def _prep(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() != 2 or logits.shape[1] != 2:
        raise ValueError(f"logits must be [B, 2]; got shape {tuple(logits.shape)}")
    y = _two_col(targets).to(logits.device)
    if y.shape[0] != logits.shape[0]:
        raise ValueError(f"logits and targets disagree on B: {logits.shape[0]} vs {y.shape[0]}")
    return logits.float(), y


def _soft_ce(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy -sum_c target_c log p_c, shape [B]."""
    return -(target * logp).sum(dim=-1)


def logconf_coef(step_frac: float, aux_coef: float = 0.5, warmup_frac: float = 0.1) -> float:
    """aux_coef * min(1, step_frac / warmup_frac), per our notes.

    NOTE: the reference (openai/weak-to-strong) uses ``step_frac`` itself during warm-up
    (``coef = aux_coef * (1 if step_frac > warmup_frac else step_frac)``), i.e. at most
    aux_coef * warmup_frac before jumping to aux_coef; we follow the notes' linear ramp instead
    (the same ramp EleutherAI uses, there in steps).
    """
    if warmup_frac <= 0:
        return float(aux_coef)
    return float(aux_coef) * min(1.0, max(0.0, float(step_frac)) / float(warmup_frac))


def logconf_threshold(probs0: torch.Tensor, target_mean1: float) -> torch.Tensor:
    """Quantile of p[:, 0] at q = mean weak label of class 1 (linear interpolation, as torch.quantile).

    Examples with p0 >= threshold harden to class 0, the rest to class 1, so about a fraction
    ``target_mean1`` of the batch hardens to class 1: the hardened labels keep the weak labels'
    class balance.
    """
    q = min(1.0, max(0.0, float(target_mean1)))
    return torch.quantile(probs0.detach().float().reshape(-1), q)


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
                 warmup_frac: float = 0.1) -> torch.Tensor:
    """Auxiliary confidence loss (Burns et al.): CE against (1-coef)*y + coef*hardened(p).

    threshold = quantile of the student's p[:, 0] at q = mean of y[:, 1], both over the GLOBAL batch
    (``stats``); with ``stats=None`` the local batch is used, which is the reference on one device.
    hardened = [1, 0] where p0 >= threshold else [0, 1] (the reference's semantics).
    """
    z, y = _prep(logits, targets)
    coef = logconf_coef(step_frac, aux_coef, warmup_frac)
    logp = F.log_softmax(z, dim=-1)
    p0 = logp.detach().exp()[:, 0]
    if stats is None:
        threshold = logconf_threshold(p0, float(y[:, 1].mean()))
    else:
        threshold = logconf_threshold(stats.probs0.to(z.device), stats.target_mean1)
    is0 = (p0 >= threshold).float()
    hardened = torch.stack([is0, 1.0 - is0], dim=1)
    target = (1.0 - coef) * y + coef * hardened
    return _soft_ce(logp, target).mean()


def entropy_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float,
                 stats: Optional[GlobalBatchStats] = None, aux_coef: float = 0.5,
                 warmup_frac: float = 0.1, detached_target: bool = False) -> torch.Tensor:
    """logconf with the student's soft, unhardened predictions (EleutherAI's "entropy").

    Value: CE(p, (1-coef)*y + coef*p) = (1-coef)*CE(y, p) + coef*H(p).
    EleutherAI builds the target with p detached; then the aux term has ZERO gradient
    (d/dz CE(stopgrad(p), softmax z) = p - p = 0), so the loss trains exactly like xent scaled by
    (1-coef). By default we write it as (1-coef)*CE(y, p) + coef*H(p) with gradient through H, i.e.
    entropy minimisation, the confidence-boosting effect logconf gets from hardening. The value is the
    same either way; ``detached_target=True`` gives EleutherAI's gradients exactly.
    Same warm-up as logconf. Per-example, needs no global stats.
    """
    z, y = _prep(logits, targets)
    coef = logconf_coef(step_frac, aux_coef, warmup_frac)
    logp = F.log_softmax(z, dim=-1)
    p = logp.exp()
    if bool(detached_target):
        return _soft_ce(logp, (1.0 - coef) * y + coef * p.detach()).mean()
    ent = -(p * logp).sum(dim=-1)
    return ((1.0 - coef) * _soft_ce(logp, y) + coef * ent).mean()


def window_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float = 0.0,
                stats: Optional[GlobalBatchStats] = None, radius: float = 0.15) -> torch.Tensor:
    """CE only on examples where the STUDENT is uncertain: max p < 0.5 + radius (EleutherAI).

    EleutherAI's confidence window uses the student's own predictions (not the weak label's
    confidence) and divides the masked sum by the batch size B. We do the same: the loss is
    mean_i 1[max p_i < 0.5 + radius] * CE_i, a per-example mean, so micro-batching is exact.
    With no qualifying example it is 0 and still attached to the graph (0 * CE), which DeepSpeed
    needs to run a backward pass.
    """
    z, y = _prep(logits, targets)
    logp = F.log_softmax(z, dim=-1)
    mask = (logp.detach().exp().max(dim=-1).values < 0.5 + float(radius)).float()
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


LOSSES: dict[str, LossSpec] = {
    "xent": LossSpec(xent_loss, False, {}, "cross-entropy against the soft weak labels"),
    "product": LossSpec(product_loss, False, {"alpha": 1.0, "beta": 1.0},
                        "CE against q ∝ p^beta y^alpha (detached)"),
    "logconf": LossSpec(logconf_loss, True, {"aux_coef": 0.5, "warmup_frac": 0.1},
                        "auxiliary confidence loss with a global-batch hardening threshold"),
    "entropy": LossSpec(entropy_loss, False,
                        {"aux_coef": 0.5, "warmup_frac": 0.1, "detached_target": False},
                        "(1-coef) CE(y, p) + coef H(p)"),
    "window": LossSpec(window_loss, False, {"radius": 0.15},
                       "CE only where the student's max p < 0.5 + radius, divided by B"),
    "kl": LossSpec(kl_loss, False, {}, "KL(y || p)"),
}


def compute_loss(name: str, logits: torch.Tensor, targets: torch.Tensor, step_frac: float,
                 stats: Optional[GlobalBatchStats] = None,
                 params: Optional[Mapping[str, Any]] = None) -> torch.Tensor:
    """Look up ``name`` in LOSSES, merge ``params`` over its defaults, and evaluate it."""
    try:
        spec = LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None
    params = dict(params or {})
    unknown = set(params) - set(spec.defaults)
    if unknown:
        raise ValueError(f"loss {name!r}: unknown params {sorted(unknown)}; "
                         f"accepted: {sorted(spec.defaults)}")
    return spec.fn(logits, targets, step_frac, stats, **{**spec.defaults, **params})
