"""Losses against hand-computed values, and exactness of the 2-rank x 2-micro-batch decomposition."""
from __future__ import annotations

import math
import os
import socket
import tempfile
from datetime import timedelta

import numpy as np
import pytest
import torch

from w2s_scale import distributed
from w2s_scale.losses import (
    LOSSES, GlobalBatchStats, PredictionHistory, compute_loss, gather_global_stats, logconf_coef,
    logconf_threshold, needs_global_stats, resolve_params,
)

# Four examples given by their probabilities; logits = log p, so softmax(logits) == P exactly.
P = np.array([[0.25, 0.75], [2 / 3, 1 / 3], [0.9, 0.1], [0.4, 0.6]])
Y = np.array([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0], [0.3, 0.7]])


def _logits():
    return torch.tensor(np.log(P), dtype=torch.float32, requires_grad=True)


def _targets():
    return torch.tensor(Y, dtype=torch.float32)


def _ce(target_row, p_row):
    return -sum(t * math.log(p) for t, p in zip(target_row, p_row))


def _loss_and_grad(name, step_frac=1.0, stats=None, params=None, step=0):
    z = _logits()
    loss = compute_loss(name, z, _targets(), step_frac, stats, params, step=step)
    loss.backward()
    return loss.item(), z.grad.numpy().astype(np.float64)


# ---------------------------------------------------------------- values by hand

def test_xent_by_hand():
    # CE_0 = -(0.2 ln .25 + 0.8 ln .75), CE_1 = -(0.6 ln 2/3 + 0.4 ln 1/3), CE_2 = -ln 0.9,
    # CE_3 = -(0.3 ln .4 + 0.7 ln .6); the loss is their mean, the gradient (p - y) / 4.
    expected = (-(0.2 * math.log(0.25) + 0.8 * math.log(0.75))
                - (0.6 * math.log(2 / 3) + 0.4 * math.log(1 / 3))
                - math.log(0.9)
                - (0.3 * math.log(0.4) + 0.7 * math.log(0.6))) / 4
    loss, grad = _loss_and_grad("xent")
    assert loss == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(grad, (P - Y) / 4, atol=1e-6)


def test_kl_by_hand():
    # KL_i = sum_c y log(y/p), 0 log 0 = 0 (example 2 has y = [1, 0]).
    kl = [0.2 * math.log(0.2 / 0.25) + 0.8 * math.log(0.8 / 0.75),
          0.6 * math.log(0.6 / (2 / 3)) + 0.4 * math.log(0.4 / (1 / 3)),
          1.0 * math.log(1.0 / 0.9),
          0.3 * math.log(0.3 / 0.4) + 0.7 * math.log(0.7 / 0.6)]
    loss, grad = _loss_and_grad("kl")
    assert loss == pytest.approx(sum(kl) / 4, rel=1e-5)
    np.testing.assert_allclose(grad, (P - Y) / 4, atol=1e-6)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (2.0, 0.5)])
def test_product_by_hand(alpha, beta):
    # q ∝ p^beta y^alpha, e.g. alpha = beta = 1, row 0: (.25*.2, .75*.8) = (.05, .6) -> (.05/.65, .6/.65)
    q = P ** beta * Y ** alpha
    q = q / q.sum(axis=1, keepdims=True)
    if alpha == 1.0 and beta == 1.0:
        np.testing.assert_allclose(q[0], [0.05 / 0.65, 0.6 / 0.65])
    expected = float(np.mean([_ce(q[i], P[i]) for i in range(4)]))
    loss, grad = _loss_and_grad("product", params={"alpha": alpha, "beta": beta})
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(grad, (P - q) / 4, atol=1e-6)  # q is detached


def test_logconf_by_hand():
    # p0 = [.25, .6667, .9, .4] sorted [.25, .4, .6667, .9]; mean y1 = (.8 + .4 + 0 + .7)/4 = .475;
    # quantile position .475 * 3 = 1.425 -> .4 + .425 * (2/3 - .4) = .51333...
    threshold = 0.4 + 0.425 * (2 / 3 - 0.4)
    assert float(logconf_threshold(torch.tensor(P[:, 0]), 0.475)) == pytest.approx(threshold)
    # p0 >= .5133 -> class 0: examples 1 and 2; examples 0 and 3 -> class 1
    hard = np.array([[0, 1], [1, 0], [1, 0], [0, 1]], dtype=float)
    for step_frac, coef in [(1.0, 0.5), (0.05, 0.25), (0.0, 0.0)]:
        target = (1 - coef) * Y + coef * hard
        expected = float(np.mean([_ce(target[i], P[i]) for i in range(4)]))
        loss, grad = _loss_and_grad("logconf", step_frac=step_frac)
        assert loss == pytest.approx(expected, rel=1e-5), step_frac
        np.testing.assert_allclose(grad, (P - target) / 4, atol=1e-6)


def test_logconf_uses_global_stats():
    # A global batch whose other predictions are all tiny puts the threshold at 0.01:
    # every local example then hardens to class 0, unlike the local threshold above.
    stats = GlobalBatchStats(probs0=torch.full((32,), 0.01), target_mean1=0.5)
    hard = np.array([[1, 0]] * 4, dtype=float)
    target = 0.5 * Y + 0.5 * hard
    expected = float(np.mean([_ce(target[i], P[i]) for i in range(4)]))
    loss, _ = _loss_and_grad("logconf", step_frac=1.0, stats=stats)
    assert loss == pytest.approx(expected, rel=1e-5)
    # stats from the local batch itself == stats=None
    local = GlobalBatchStats.from_batch(_logits(), _targets())
    assert _loss_and_grad("logconf", 0.3, local)[0] == pytest.approx(_loss_and_grad("logconf", 0.3)[0])


def test_logconf_warmup_coefficient():
    # ours: aux_coef * min(1, t / warmup_frac); the reference would give 0.5 * 0.05 = 0.025 at t = 0.05
    assert logconf_coef(0.0) == 0.0
    assert logconf_coef(0.05) == pytest.approx(0.25)
    assert logconf_coef(0.1) == pytest.approx(0.5)
    assert logconf_coef(0.7) == pytest.approx(0.5)
    assert logconf_coef(0.02, aux_coef=0.8, warmup_frac=0.2) == pytest.approx(0.08)
    assert logconf_coef(0.0, warmup_frac=0.0) == 0.5
    # the reference's: aux_coef * (1 if t > warmup_frac else t): 0.025 at t = .05, 0.05 at t = .1
    # (not yet past warmup_frac), then the jump to 0.5
    assert logconf_coef(0.05, warmup="reference") == pytest.approx(0.025)
    assert logconf_coef(0.1, warmup="reference") == pytest.approx(0.05)
    assert logconf_coef(0.1001, warmup="reference") == pytest.approx(0.5)
    assert logconf_coef(0.0, warmup="reference") == 0.0
    with pytest.raises(ValueError):
        logconf_coef(0.5, warmup="cosine")


def test_logconf_reference_warmup_in_the_loss():
    # at t = .05 the reference's coef is .025: the target is .975 y + .025 hardened
    hard = np.array([[0, 1], [1, 0], [1, 0], [0, 1]], dtype=float)
    target = 0.975 * Y + 0.025 * hard
    expected = float(np.mean([_ce(target[i], P[i]) for i in range(4)]))
    loss, grad = _loss_and_grad("logconf", step_frac=0.05, params={"warmup": "reference"})
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(grad, (P - target) / 4, atol=1e-6)


@pytest.mark.parametrize("m", [0.1, 0.25, 0.475, 0.5, 0.8])
def test_threshold_keeps_class_balance(m):
    rng = np.random.default_rng(0)
    p0 = rng.uniform(size=32)
    thr = float(logconf_threshold(torch.tensor(p0, dtype=torch.float64), m))
    assert thr == pytest.approx(float(np.quantile(p0, m)))  # numpy's linear quantile
    frac_class1 = float(np.mean(p0 < thr))  # hardened to class 1
    assert abs(frac_class1 - m) <= 1 / 32 + 1e-12


def test_entropy_is_eleuthers_detached_target():
    # value (1-c) CE(y,p) + c H(p); the aux term's target p is detached, so the gradient is
    # (1-c)(p - y): xent scaled by 1 - c. Warm-up linear over 100 steps: c = .5 * 40/100 at step 40.
    H = -(P * np.log(P)).sum(axis=1)
    ce = np.array([_ce(Y[i], P[i]) for i in range(4)])
    for step, coef in [(40, 0.2), (100, 0.5), (5000, 0.5), (0, 0.0)]:
        loss, grad = _loss_and_grad("entropy", step_frac=0.0, step=step)
        assert loss == pytest.approx(float(np.mean((1 - coef) * ce + coef * H)), rel=1e-5)
        np.testing.assert_allclose(grad, (1 - coef) * (P - Y) / 4, atol=1e-6)
        xent_loss, xent_grad = _loss_and_grad("xent")
        np.testing.assert_allclose(grad, (1 - coef) * xent_grad, atol=1e-6)


def test_entropy_min_by_hand():
    # value (1-c) CE(y,p) + c H(p); grad (1-c)(p-y) + c dH/dz with dH/dz_k = -p_k (ln p_k + H)
    coef = 0.5
    H = -(P * np.log(P)).sum(axis=1)
    ce = np.array([_ce(Y[i], P[i]) for i in range(4)])
    expected = float(np.mean((1 - coef) * ce + coef * H))
    dH = -P * (np.log(P) + H[:, None])
    loss, grad = _loss_and_grad("entropy_min", step_frac=1.0)
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(grad, ((1 - coef) * (P - Y) + coef * dH) / 4, atol=1e-6)


def test_logconf_eleuther_rolling_buffer_by_hand():
    # history (earlier steps) h = [.1, .2, .3]; buffer 4, prior .5 (EleutherAI's default).
    # example i's window: the last 4 of h + p0[:i+1]:
    #   i=0: [.1 .2 .3 .25] -> median .225; p0 .25 >= .225 -> class 0
    #   i=1: [.2 .3 .25 .6667] -> .275; .6667 -> 0       i=2: [.3 .25 .6667 .9] -> .48333; .9 -> 0
    #   i=3: [.25 .6667 .9 .4] -> .53333; .4 -> 1
    stats = GlobalBatchStats.from_batch(_logits(), _targets(),
                                        history0=torch.tensor([0.1, 0.2, 0.3]))
    hard = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=float)
    for step, coef in [(100, 0.5), (20, 0.1)]:
        target = (1 - coef) * Y + coef * hard
        expected = float(np.mean([_ce(target[i], P[i]) for i in range(4)]))
        loss, grad = _loss_and_grad("logconf_eleuther", 0.0, stats, {"buffer_size": 4}, step=step)
        assert loss == pytest.approx(expected, rel=1e-5)
        np.testing.assert_allclose(grad, (P - target) / 4, atol=1e-6)
    # a loss call on a part of the batch (positions 2, 3) sees the same thresholds
    part = compute_loss("logconf_eleuther", _logits()[2:], _targets()[2:], 0.0,
                        stats.for_positions([2, 3]), {"buffer_size": 4}, step=100)
    target = 0.5 * Y + 0.5 * hard
    assert part.item() == pytest.approx(np.mean([_ce(target[i], P[i]) for i in (2, 3)]), rel=1e-5)


def test_logconf_eleuther_prior_and_balance():
    # no history, buffer 32: windows are prefixes of the batch. batch_prior: the batch's mean
    # weak label .475 is the quantile: i=0 [.25] -> .25 (class 0); i=1 [.25 .6667] -> .448 (0);
    # i=2 [.25 .6667 .9] -> .25 + .95 * (.6667 - .25) = .6458 (0); i=3 -> .51333 (.4: class 1)
    hard = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=float)
    target = 0.5 * Y + 0.5 * hard
    expected = float(np.mean([_ce(target[i], P[i]) for i in range(4)]))
    loss, _ = _loss_and_grad("logconf_eleuther", 0.0, None, {"batch_prior": 1}, step=100)
    assert loss == pytest.approx(expected, rel=1e-5)
    # balance_batch: labels' log-odds centred on the batch mean, then sigmoid
    y1 = Y[:, 1]
    lo = np.log(y1 + 1e-7) - np.log(1 - y1 + 1e-7)
    yb1 = 1 / (1 + np.exp(-(lo - lo.mean())))
    yb = np.stack([1 - yb1, yb1], axis=1)
    # prior .5: i=0 [.25] -> 0; i=1 median(.25, .6667) = .4583 -> 0; i=2 .6667 -> .9: 0;
    # i=3 median of 4 = (.4 + .6667)/2 = .5333 -> .4: class 1
    target = 0.5 * yb + 0.5 * hard
    expected = float(np.mean([_ce(target[i], P[i]) for i in range(4)]))
    loss, _ = _loss_and_grad("logconf_eleuther", 0.0, None, {"balance_batch": 1}, step=100)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert needs_global_stats("entropy", {"balance_batch": 1})
    assert not needs_global_stats("entropy") and needs_global_stats("logconf_eleuther")


def test_prediction_history_keeps_the_last():
    history = PredictionHistory(capacity=5)
    history.push(torch.tensor([0.1, 0.2, 0.3]))
    history.push(torch.tensor([0.4, 0.5, 0.6]))
    assert history.state() == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])
    assert PredictionHistory(history.state(), capacity=5).state() == history.state()


def test_window_midweak_radius():
    # |p1 - .5| of the weak labels = [.3, .1, .5, .2]: torch's median (lower middle) = .2
    params = resolve_params("window", {"radius": "midweak"}, Y)
    assert params["radius"] == pytest.approx(0.2)
    assert resolve_params("window", {"radius": 0.1}, Y) == {"radius": 0.1}
    with pytest.raises(ValueError, match="midweak"):
        compute_loss("window", _logits(), _targets(), 0.0, params={"radius": "midweak"})
    with pytest.raises(ValueError, match="radius"):
        compute_loss("window", _logits(), _targets(), 0.0, params={"radius": "wide"})


def test_window_by_hand():
    # max p = [.75, .6667, .9, .6]; radius .15 -> only example 3 (.6 < .65); divide by B = 4
    ce3 = -(0.3 * math.log(0.4) + 0.7 * math.log(0.6))
    loss, grad = _loss_and_grad("window")
    assert loss == pytest.approx(ce3 / 4, rel=1e-5)
    mask = np.array([0, 0, 0, 1.0])[:, None]
    np.testing.assert_allclose(grad, mask * (P - Y) / 4, atol=1e-6)
    # radius .2 -> examples 1 (.6667 < .7) and 3
    ce1 = -(0.6 * math.log(2 / 3) + 0.4 * math.log(1 / 3))
    assert _loss_and_grad("window", params={"radius": 0.2})[0] == pytest.approx((ce1 + ce3) / 4, rel=1e-5)


def test_window_empty_keeps_graph():
    z = _logits()
    loss = compute_loss("window", z, _targets(), 0.5, params={"radius": 0.01})
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z.grad))


# reverse losses: Y row 2 is [1, 0], so log 0 is floored at A = -4 there
A = -4.0
LOGQ = np.maximum(np.log(np.where(Y > 0, Y, 1e-300)), A)  # row 2: [0, -4]


def _rce_rows():
    # RCE_i = -sum_c p_c log q_c, e.g. row 0: -(0.25 ln 0.2 + 0.75 ln 0.8); row 2: -(0.1 * -4) = 0.4
    return [-(P[i] * LOGQ[i]).sum() for i in range(4)]


def test_rce_by_hand():
    rows = _rce_rows()
    assert rows[0] == pytest.approx(-(0.25 * math.log(0.2) + 0.75 * math.log(0.8)))
    assert rows[2] == pytest.approx(0.4)
    loss, grad = _loss_and_grad("rce")
    assert loss == pytest.approx(sum(rows) / 4, rel=1e-5)
    # d/dz_k of -sum_c p_c g_c (g = floored log q) is -p_k (g_k - sum_c p_c g_c)
    expected = -P * (LOGQ - (P * LOGQ).sum(axis=1, keepdims=True)) / 4
    np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_reverse_kl_by_hand():
    # RKL_i = sum_c p_c (ln p_c - ln q_c) = RCE_i - H(p_i); row 1: (2/3) ln((2/3)/0.6) + (1/3) ln((1/3)/0.4)
    rows = [(P[i] * np.log(P[i])).sum() + r for i, r in enumerate(_rce_rows())]
    assert rows[1] == pytest.approx(2 / 3 * math.log((2 / 3) / 0.6) + 1 / 3 * math.log((1 / 3) / 0.4))
    loss, grad = _loss_and_grad("reverse_kl")
    assert loss == pytest.approx(sum(rows) / 4, rel=1e-5)
    g = np.log(P) - LOGQ  # d/dz_k sum_c p_c (ln p_c - g_c) = p_k (ln p_k - g_k - RKL_i)
    expected = P * (g - (P * g).sum(axis=1, keepdims=True)) / 4
    np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_sce_by_hand():
    ce = [_ce(Y[i], P[i]) for i in range(4)]
    expected = float(np.mean([0.1 * c + 1.0 * r for c, r in zip(ce, _rce_rows())]))
    loss, _ = _loss_and_grad("sce")  # defaults alpha 0.1, beta 1 (Wang et al.)
    assert loss == pytest.approx(expected, rel=1e-5)
    loss, _ = _loss_and_grad("sce", params={"alpha": 1.0, "beta": 0.0})
    assert loss == pytest.approx(np.mean(ce), rel=1e-5)  # beta 0: plain cross-entropy


def test_reverse_losses_take_k_classes():
    """Three classes, by hand: p = softmax(ln [0.5, 0.3, 0.2]), q = [0.2, 0, 0.8] (log 0 -> A = -2)."""
    p, q = np.array([0.5, 0.3, 0.2]), np.array([[0.2, 0.0, 0.8]])
    logits = torch.tensor(np.log([p]), dtype=torch.float32)
    y = torch.tensor(q, dtype=torch.float32)
    logq = np.array([math.log(0.2), -2.0, math.log(0.8)])
    rce = -(p * logq).sum()
    assert compute_loss("rce", logits, y, 0.0, params={"log_zero": -2.0}).item() == pytest.approx(rce, rel=1e-5)
    rkl = (p * (np.log(p) - logq)).sum()
    assert compute_loss("reverse_kl", logits, y, 0.0, params={"log_zero": -2.0}).item() == pytest.approx(rkl, rel=1e-5)
    sce = 0.5 * -(q[0] * np.log(p)).sum() + 2.0 * rce
    got = compute_loss("sce", logits, y, 0.0, params={"alpha": 0.5, "beta": 2.0, "log_zero": -2.0})
    assert got.item() == pytest.approx(sce, rel=1e-5)
    with pytest.raises(ValueError, match="K >= 2"):
        compute_loss("rce", logits, torch.tensor([[0.5, 0.5]]), 0.0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_finite(name):
    z = torch.tensor([[60.0, -60.0], [-80.0, 80.0], [0.0, 0.0], [3.0, -1.0]], requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 0.0]])
    loss = compute_loss(name, z, y, 0.5, step=7)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert loss.dim() == 0


def test_registry():
    assert set(LOSSES) == {"xent", "product", "logconf", "logconf_eleuther", "entropy",
                           "entropy_min", "window", "kl", "rce", "reverse_kl", "sce", "xent_hard"}
    assert {n for n, s in LOSSES.items() if s.needs_global_stats} == {"logconf", "logconf_eleuther"}
    assert LOSSES["logconf"].defaults == {"aux_coef": 0.5, "warmup_frac": 0.1, "warmup": "linear"}
    assert LOSSES["product"].defaults == {"alpha": 1.0, "beta": 1.0}
    assert LOSSES["window"].defaults == {"radius": 0.15}
    with pytest.raises(KeyError):
        compute_loss("nope", _logits(), _targets(), 0.0)
    with pytest.raises(ValueError):
        compute_loss("xent", _logits(), _targets(), 0.0, params={"radius": 1.0})
    # [B] targets read as p(class 1)
    a = compute_loss("xent", _logits(), torch.tensor(Y[:, 1]), 0.0)
    assert a.item() == pytest.approx(compute_loss("xent", _logits(), _targets(), 0.0).item())


def test_single_process_helpers():
    t = torch.arange(3.0)
    assert torch.equal(distributed.all_gather_tensor(t), t)
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.any_rank(True) and not distributed.any_rank(False)
    assert distributed.world_size() >= 1 and distributed.rank() >= 0
    s = gather_global_stats([torch.tensor([0.1, 0.2]), torch.tensor([0.3])],
                            [torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([[0.0, 1.0]])])
    assert torch.allclose(s.probs0, torch.tensor([0.1, 0.2, 0.3]))
    assert s.target_mean1 == pytest.approx(0.5)


# ---------------------------------------------------------------- 2 ranks x 2 micro-batches

WORLD, ACCUM, MICRO = 2, 2, 2
CASES = [("xent", 0.5, None), ("product", 0.5, None), ("logconf", 0.05, None),
         ("logconf", 1.0, None), ("logconf", 0.05, {"warmup": "reference"}),
         ("entropy", 0.05, None), ("entropy", 1.0, None), ("entropy", 1.0, {"balance_batch": 1}),
         ("entropy_min", 0.05, None), ("entropy_min", 1.0, None),
         ("logconf_eleuther", 1.0, None), ("logconf_eleuther", 1.0, {"buffer_size": 5}),
         ("logconf_eleuther", 1.0, {"batch_prior": 1, "buffer_size": 6}),
         ("logconf_eleuther", 1.0, {"balance_batch": 1}), ("window", 0.5, None), ("kl", 0.5, None),
         ("rce", 0.5, None), ("reverse_kl", 0.5, None), ("sce", 0.5, None),
         ("sce", 0.5, {"alpha": 1.0, "beta": 0.5, "log_zero": -2.0})]
STEP = 60  # optimizer step for the losses that warm up over steps
HISTORY = torch.tensor([0.2, 0.7, 0.45, 0.9])  # logconf_eleuther's buffer from earlier steps


def _problem():
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(WORLD * ACCUM * MICRO, 4, generator=g) * 2.0
    y1 = torch.rand(WORLD * ACCUM * MICRO, generator=g)
    y = torch.stack([1 - y1, y1], dim=1)
    model = torch.nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 4, generator=g) * 0.3)
        model.bias.copy_(torch.randn(2, generator=g) * 0.1)
    return x, y, model


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


def join_gloo(r: int, port: int, world: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r,
                            world_size=world, timeout=timedelta(seconds=120))


def rank_share(x, y, r: int, accum: int, size: int) -> list:
    """Rank r's micro-batches (x, y) of the global batch: ranks' shares in rank order."""
    first = r * accum * size
    return [(x[first + k * size: first + (k + 1) * size], y[first + k * size: first + (k + 1) * size])
            for k in range(accum)]


def _worker(r, port, out_path):
    import torch.distributed as dist

    join_gloo(r, port, WORLD)
    try:
        x, y, model = _problem()
        micro = rank_share(x, y, r, ACCUM, MICRO)
        with torch.no_grad():  # pre-pass: the student's p0 for this rank's whole share of the batch
            p0 = [torch.softmax(model(xb), -1)[:, 0] for xb, _ in micro]
        stats = gather_global_stats(p0, [yb for _, yb in micro])
        stats = GlobalBatchStats(stats.probs0, stats.target_mean1, stats.target_logodds_mean1,
                                 history0=HISTORY)
        results = micro_batch_results(model, micro, stats, CASES, r, STEP)
        # the helpers with unequal lengths and objects
        gathered = distributed.all_gather_tensor(torch.full((2 * r + 1, 2), float(r)))
        objs = distributed.all_gather_objects({"rank": distributed.rank()})
        anyr = (distributed.any_rank(r == 1), distributed.any_rank(False))
        if r == 0:
            torch.save({"results": results, "stats": stats, "gathered": gathered, "objs": objs,
                        "any": anyr, "world": distributed.world_size()}, out_path)
        distributed.barrier()
    finally:
        dist.destroy_process_group()


def micro_batch_results(model, micro, stats, cases, r, step) -> dict:
    """On rank r of a gloo group: each case's mean loss and rank-averaged gradients over this
    rank's micro-batches, with the global stats (each call told its positions in the global batch,
    ranks' shares in rank order) and without ("naive": local stats per micro-batch)."""
    import torch.distributed as dist

    world, accum, size = dist.get_world_size(), len(micro), len(micro[0][0])
    results = {}
    for i, (name, step_frac, params) in enumerate(cases):
        for variant, st in (("global", stats), ("naive", None)):
            model.zero_grad()
            total = 0.0
            for k, (xb, yb) in enumerate(micro):
                first = (r * accum + k) * size
                part = st.for_positions(range(first, first + size)) if st else None
                loss = compute_loss(name, model(xb), yb, step_frac, part, params, step=step)
                (loss / accum).backward()
                total += loss.item()
            for p in model.parameters():  # what DeepSpeed does: average over ranks
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= world
            tot = torch.tensor([total])
            dist.all_reduce(tot, op=dist.ReduceOp.SUM)
            results[(i, variant)] = (tot.item() / (world * accum), _grads(model))
    return results


def assert_equals_one_device(results, model, x, y, cases, history, step) -> list[bool]:
    """Each case's 2-rank result (`micro_batch_results`, "global") equals one device on the
    whole batch; returns, per case, whether the "naive" result (no global stats) differs from it."""
    naive_differs = []
    for i, (name, step_frac, params) in enumerate(cases):
        model.zero_grad()
        whole = GlobalBatchStats.from_batch(model(x), y, history0=history)  # one device
        ref = compute_loss(name, model(x), y, step_frac, whole, params, step=step)
        ref.backward()
        ref_grads = _grads(model)
        loss, grads = results[(i, "global")]
        assert loss == pytest.approx(ref.item(), rel=1e-5, abs=1e-7), (name, step_frac, params)
        for g, gr in zip(grads, ref_grads):
            torch.testing.assert_close(g, gr, rtol=1e-5, atol=1e-6, msg=f"{name} {step_frac} {params}")
        _, n_grads = results[(i, "naive")]
        naive_differs.append(not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(n_grads, ref_grads)))
    return naive_differs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_two_micro_batches_equal_one_device():
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.pt")
        mp.spawn(_worker, args=(free_port(), out), nprocs=WORLD, join=True)
        got = torch.load(out, weights_only=False)

    assert got["world"] == 2
    assert got["gathered"].tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    assert got["objs"] == [{"rank": 0}, {"rank": 1}]
    assert got["any"] == (True, False)

    x, y, model = _problem()
    with torch.no_grad():
        p_all = torch.softmax(model(x), -1)
    assert torch.allclose(got["stats"].probs0, p_all[:, 0], atol=1e-6)
    assert got["stats"].target_mean1 == pytest.approx(y[:, 1].mean().item(), rel=1e-6)
    # the window case must be non-trivial: some examples in, some out of the window
    inside = (p_all.max(-1).values < 0.65)
    assert 0 < int(inside.sum()) < len(inside)

    naive_differs = [differs for (name, _, _), differs in zip(CASES, assert_equals_one_device(
        got["results"], model, x, y, CASES, HISTORY, STEP)) if name in ("logconf", "logconf_eleuther")]
    # sanity: per-micro-batch thresholds (no global stats) would NOT match the one-device result
    assert all(naive_differs)


def test_a_loss_whose_meaning_changed_does_not_reuse_old_runs(tmp_path):
    """`entropy` meant our entropy minimisation before it meant EleutherAI's loss: a run of the old
    meaning (hash without a revision) must not share the hash of the new one."""
    from w2s_scale.config import LossConfig, stable_hash
    from w2s_scale.planning import loss_identity as _loss_identity

    for name in ("xent", "logconf"):  # unchanged losses keep the hashes of finished runs
        assert _loss_identity(LossConfig(name=name)) == LossConfig(name=name)
    entropy = LossConfig(name="entropy")
    assert stable_hash(_loss_identity(entropy)) != stable_hash(entropy)
