"""Every loss for K classes (K = 2, 3, 10), and the binary path unchanged.

The binary goldens (tests/goldens/binary_losses_main.json) are each loss's value and gradient on
the fixed inputs below, computed with main's code (commit 83bbb34, before K classes): the binary path
must still give them bit for bit. The two-rank test checks 1 rank == 2 ranks x 2 micro-batches for
K = 3, as tests/test_losses.py does for K = 2.
"""
import dataclasses
import itertools
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from test_losses import (free_port, assert_equals_one_device, join_gloo,
                         micro_batch_results, rank_share)
from w2s_scale.losses import (LOSSES, GlobalBatchStats, PredictionHistory, balanced_hardening,
                              class_quotas, compute_loss, gather_global_stats, logconf_coef,
                              logconf_threshold, resolve_params)

GOLDENS = Path(__file__).parent / "goldens" / "binary_losses_main.json"


def _golden_inputs():
    """The inputs the goldens were computed on (the same generator calls as on main)."""
    g = torch.Generator().manual_seed(7)
    logits = (torch.randn(12, 2, generator=g, dtype=torch.float64) * 2).float()
    y1 = torch.rand(12, generator=g, dtype=torch.float64).float()
    hist = torch.rand(5, generator=g, dtype=torch.float64).float()
    return logits, torch.stack([1 - y1, y1], 1), hist


def _golden_stats(logits, hist):
    other = torch.rand(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64).float()
    p0 = torch.cat([other[:2], torch.softmax(logits, -1)[:, 0], other[2:]])
    return GlobalBatchStats(probs0=p0, target_mean1=0.43, target_logodds_mean1=-0.2,
                            history0=hist).for_positions(list(range(2, 14)))


def test_binary_losses_bit_for_bit_as_on_main():
    logits, targets, hist = _golden_inputs()
    cases = json.loads(GOLDENS.read_text())
    # every loss main had (83bbb34) has a golden; rce, reverse_kl, sce and xent_hard came later,
    # written for K classes, with hand-computed tests in test_losses.py / test_testbed_configs.py
    assert {c["name"] for c in cases} == set(LOSSES) - {"rce", "reverse_kl", "sce", "xent_hard"}
    for case in cases:
        z = logits.clone().requires_grad_(True)
        stats = _golden_stats(logits, hist) if case["stats"] else None
        value = compute_loss(case["name"], z, targets, case["frac"], stats, case["params"], step=40)
        value.backward()
        assert value.item() == case["value"], case["name"]
        assert z.grad.tolist() == case["grad"], case["name"]


# --------------------------------------------------------------------------- K classes

def _problem(k: int, n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed + k)
    logits = torch.randn(n, k, generator=g) * 2
    targets = torch.softmax(torch.randn(n, k, generator=g) * 1.5, dim=-1)
    return logits, targets


def _ce(target, logits):
    return -(target * F.log_softmax(logits, -1)).sum(-1).mean()


def _params(name: str) -> dict:
    return {"window": {"radius": 0.2}, "logconf_eleuther": {"buffer_size": 5},
            "product": {"alpha": 0.7, "beta": 1.3}}.get(name, {})


@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_takes_k_classes(name, k):
    """Finite value and gradient of the right shape; with the student's own stats (local batch)
    equal to the same loss without stats (what one device on the whole batch computes)."""
    logits, targets = _problem(k)
    z = logits.clone().requires_grad_(True)
    value = compute_loss(name, z, targets, 0.5, None, _params(name), step=60)
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value)
    assert z.grad.shape == (12, k) and torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0
    # the gradient of each row sums to 0 (softmax is shift-invariant): a real [B, K] loss
    torch.testing.assert_close(z.grad.sum(-1), torch.zeros(12), atol=1e-6, rtol=0)
    stats = GlobalBatchStats.from_batch(logits, targets)
    with_stats = compute_loss(name, logits, targets, 0.5, stats, _params(name), step=60)
    assert with_stats.item() == pytest.approx(value.item(), rel=1e-6)


@pytest.mark.parametrize("k", [2, 3, 10])
def test_k_class_losses_by_hand(k):
    logits, y = _problem(k)
    p = torch.softmax(logits, -1)
    assert compute_loss("xent", logits, y, 0.0).item() == pytest.approx(
        F.cross_entropy(logits, y).item(), rel=1e-6)
    kl = (y * (y.log() - p.log())).sum(-1).mean()
    assert compute_loss("kl", logits, y, 0.0).item() == pytest.approx(kl.item(), rel=1e-5)
    q = p ** 1.3 * y ** 0.7
    q = q / q.sum(-1, keepdim=True)
    assert compute_loss("product", logits, y, 0.0, params={"alpha": 0.7, "beta": 1.3}).item() \
        == pytest.approx(_ce(q, logits).item(), rel=1e-5)
    ent = -(p * p.log()).sum(-1)
    coef = logconf_coef(1.0)
    expect = ((1 - coef) * -(y * p.log()).sum(-1) + coef * ent).mean()
    assert compute_loss("entropy_min", logits, y, 1.0).item() == pytest.approx(expect.item(), rel=1e-5)
    assert compute_loss("entropy", logits, y, 1.0, step=1000).item() == pytest.approx(expect.item(), rel=1e-5)
    # window: CE only where max p < 1/K + radius (0.5 + radius for K = 2), divided by B
    floor = 0.5 if k == 2 else 1 / k
    mask = (p.max(-1).values < floor + 0.2).float()
    expect = (mask * -(y * p.log()).sum(-1)).mean()
    assert compute_loss("window", logits, y, 0.0, params={"radius": 0.2}).item() == \
        pytest.approx(expect.item(), rel=1e-5, abs=1e-7)


def test_class_quotas_largest_remainder():
    assert class_quotas([0.5, 0.3, 0.2], 10) == [5, 3, 2]
    assert class_quotas([0.34, 0.33, 0.33], 10) == [4, 3, 3]
    assert class_quotas([1 / 3, 1 / 3, 1 / 3], 4) == [2, 1, 1]  # equal remainders: lower class
    assert class_quotas([2.0, 1.0, 1.0], 8) == [4, 2, 2]  # renormalised
    for _ in range(50):
        m = torch.rand(7)
        n = int(torch.randint(1, 40, ()))
        q = class_quotas(m, n)
        assert sum(q) == n and all(abs(q[c] - n * m[c] / m.sum()) < 1 for c in range(7))


@pytest.mark.parametrize("seed", range(6))
def test_balanced_hardening_is_the_best_assignment_with_the_quotas(seed):
    """Brute force over every labelling with the quota's counts: none has a higher likelihood."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(7, 3, generator=g) * 2, -1)
    quotas = class_quotas(torch.rand(3, generator=g), 7)
    classes = balanced_hardening(probs, quotas)
    assert torch.bincount(classes, minlength=3).tolist() == quotas
    score = probs.double().log()[torch.arange(7), classes].sum()
    base = [c for c, n in enumerate(quotas) for _ in range(n)]
    best = max(probs.double().log()[torch.arange(7), torch.tensor(perm)].sum()
               for perm in set(itertools.permutations(base)))
    assert score.item() == pytest.approx(best.item(), abs=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_k2_balanced_hardening_is_the_references_threshold(seed):
    """For K = 2 the class-wise rule with the reference's count n1 = #{p0 < quantile} hardens
    exactly the examples the reference's threshold does, ties included."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 40, (), generator=g))
    p0 = torch.rand(n, generator=g)
    if seed % 3 == 0:  # ties
        p0 = (p0 * 4).round() / 4
        p0 = p0.clamp(0.05, 0.95)
    m1 = float(torch.rand((), generator=g))
    threshold = logconf_threshold(p0, m1)
    reference = (p0 < threshold).long()  # the reference: class 0 where p0 >= threshold
    n1 = int(reference.sum())
    probs = torch.stack([p0, 1 - p0], 1)
    assert torch.equal(balanced_hardening(probs, [n - n1, n1]), reference)


def test_k_class_logconf_hardens_with_global_class_balance():
    logits, y = _problem(3, n=30)
    stats = GlobalBatchStats.from_batch(logits, y)
    quotas = class_quotas(y.mean(0), 30)
    hard = balanced_hardening(torch.softmax(logits, -1), quotas)
    assert torch.bincount(hard, minlength=3).tolist() == quotas
    # at full weight (coef = aux_coef = 1) the target is the hardened one-hot
    value = compute_loss("logconf", logits, y, 1.0, stats, {"aux_coef": 1.0})
    assert value.item() == pytest.approx(_ce(F.one_hot(hard, 3).float(), logits).item(), rel=1e-6)
    half = compute_loss("logconf", logits, y, 1.0, stats)
    assert half.item() == pytest.approx(_ce(0.5 * y + 0.5 * F.one_hot(hard, 3).float(), logits).item(), rel=1e-6)
    # micro-batches given their positions in the global batch see the global hardening
    parts = [compute_loss("logconf", logits[i:i + 10], y[i:i + 10], 1.0,
                          stats.for_positions(range(i, i + 10))) for i in (0, 10, 20)]
    assert sum(p.item() for p in parts) / 3 == pytest.approx(half.item(), rel=1e-6)
    # without global stats each micro-batch would balance on its own: a different loss
    naive = [compute_loss("logconf", logits[i:i + 10], y[i:i + 10], 1.0) for i in (0, 10, 20)]
    assert sum(p.item() for p in naive) / 3 != pytest.approx(half.item(), rel=1e-6)


def test_k_class_logconf_eleuther_rolling_buffer():
    logits, y = _problem(3, n=8)
    probs = torch.softmax(logits, -1)
    history = torch.softmax(torch.randn(3, 3, generator=torch.Generator().manual_seed(5)), -1)
    stats = GlobalBatchStats.from_batch(logits, y, history0=history)
    size = 4
    stream = torch.cat([history, probs])
    expect = []
    for i in range(8):
        window = stream[max(0, 3 + i + 1 - size): 3 + i + 1]
        expect.append(int(balanced_hardening(window, class_quotas([1, 1, 1], len(window)))[-1]))
    value = compute_loss("logconf_eleuther", logits, y, 0.0, stats,
                         {"buffer_size": size, "aux_coef": 1.0, "warmup_steps": 0})
    assert value.item() == pytest.approx(_ce(F.one_hot(torch.tensor(expect), 3).float(), logits).item(), rel=1e-6)
    whole = compute_loss("logconf_eleuther", logits, y, 0.0, stats, {"buffer_size": size}, step=50)
    parts = [compute_loss("logconf_eleuther", logits[i:i + 4], y[i:i + 4], 0.0,
                          stats.for_positions(range(i, i + 4)), {"buffer_size": size}, step=50)
             for i in (0, 4)]
    assert sum(p.item() for p in parts) / 2 == pytest.approx(whole.item(), rel=1e-6)
    # batch prior and balance_batch run for K classes too
    for extra in ({"batch_prior": 1}, {"balance_batch": 1}):
        assert torch.isfinite(compute_loss("logconf_eleuther", logits, y, 0.0, stats,
                                           {"buffer_size": size, **extra}, step=50))
    # a binary history cannot feed a K-class buffer
    bad = GlobalBatchStats.from_batch(logits, y, history0=torch.rand(3))
    with pytest.raises(ValueError, match="history"):
        compute_loss("logconf_eleuther", logits, y, 0.0, bad, {"buffer_size": size})


def test_k_class_prediction_history_and_midweak():
    hist = PredictionHistory(capacity=5)
    hist.push(torch.softmax(torch.randn(3, 4), -1))
    hist.push(torch.softmax(torch.randn(4, 4), -1))
    assert hist.values.shape == (5, 4)
    again = PredictionHistory(hist.state(), capacity=5)  # as restored from a checkpoint
    assert torch.equal(again.values, hist.values)
    binary = PredictionHistory(capacity=5)
    binary.push(torch.rand(3))
    assert binary.values.shape == (3,)
    y = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.3, 0.3], [0.2, 0.2, 0.6]])
    radius = resolve_params("window", {"radius": "midweak"}, y.numpy())["radius"]
    assert radius == pytest.approx(0.6 - 1 / 3)  # median of max y - 1/K: 0.367, 0.067, 0.267


def test_k_class_shapes_are_checked():
    with pytest.raises(ValueError, match=r"targets must be \[B, 3\]"):
        compute_loss("xent", torch.zeros(4, 3), torch.zeros(4, 2), 0.0)
    with pytest.raises(ValueError, match=r"targets must be \[B, 3\]"):
        compute_loss("xent", torch.zeros(4, 3), torch.zeros(4), 0.0)  # [B] is binary only
    with pytest.raises(ValueError, match="K >= 2"):
        compute_loss("xent", torch.zeros(4, 1), torch.ones(4, 1), 0.0)
    binary_only = GlobalBatchStats(probs0=torch.rand(4), target_mean1=0.5)
    with pytest.raises(ValueError, match="K > 2"):
        compute_loss("logconf", torch.zeros(4, 3), torch.full((4, 3), 1 / 3), 1.0, binary_only)


# --------------------------------------------------------------------------- 1 rank == 2 ranks

WORLD, ACCUM, MICRO, K = 2, 2, 5, 3
CASES = [("xent", 0.5, None), ("product", 0.5, None), ("kl", 0.5, None),
         ("logconf", 0.05, None), ("logconf", 1.0, None), ("logconf", 1.0, {"warmup": "reference"}),
         ("entropy", 1.0, None), ("entropy", 1.0, {"balance_batch": 1}), ("entropy_min", 1.0, None),
         ("logconf_eleuther", 1.0, None), ("logconf_eleuther", 1.0, {"buffer_size": 6}),
         ("logconf_eleuther", 1.0, {"batch_prior": 1, "buffer_size": 7}),
         ("logconf_eleuther", 1.0, {"balance_batch": 1}), ("window", 0.5, {"radius": 0.25})]
STEP = 60
HISTORY = torch.softmax(torch.tensor([[0.1, 0.9, -0.3], [1.2, 0.0, 0.4], [-0.5, 0.2, 0.8],
                                      [0.3, 0.3, 0.3]]), -1)


def _k_problem():
    g = torch.Generator().manual_seed(4321)
    n = WORLD * ACCUM * MICRO
    x = torch.randn(n, 4, generator=g) * 2.0
    y = torch.softmax(torch.randn(n, K, generator=g) * 1.5, -1)
    model = torch.nn.Linear(4, K)
    with torch.no_grad():
        model.weight.copy_(torch.randn(K, 4, generator=g) * 0.4)
        model.bias.copy_(torch.randn(K, generator=g) * 0.1)
    return x, y, model


def _worker(r, port, out_path):
    import torch.distributed as dist

    join_gloo(r, port, WORLD)
    try:
        x, y, model = _k_problem()
        micro = rank_share(x, y, r, ACCUM, MICRO)
        with torch.no_grad():  # pre-pass: the student's p for this rank's share of the batch
            probs = [torch.softmax(model(xb), -1) for xb, _ in micro]
        stats = dataclasses.replace(gather_global_stats(probs, [yb for _, yb in micro]),
                                    history0=HISTORY)
        results = micro_batch_results(model, micro, stats, CASES, r, STEP)
        if r == 0:
            torch.save({"results": results, "probs": stats.probs,
                        "target_mean": stats.target_mean}, out_path)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_k3_two_ranks_two_micro_batches_equal_one_device():
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.pt")
        mp.spawn(_worker, args=(free_port(), out), nprocs=WORLD, join=True)
        got = torch.load(out, weights_only=False)

    x, y, model = _k_problem()
    with torch.no_grad():
        p_all = torch.softmax(model(x), -1)
    torch.testing.assert_close(got["probs"], p_all, atol=1e-6, rtol=0)
    torch.testing.assert_close(got["target_mean"], y.double().mean(0), atol=1e-7, rtol=0)
    inside = p_all.max(-1).values < 1 / K + 0.25  # the window case is non-trivial
    assert 0 < int(inside.sum()) < len(inside)

    differs = assert_equals_one_device(got["results"], model, x, y, CASES, HISTORY, STEP)
    naive_differs = [d for (name, frac, _), d in zip(CASES, differs)
                     if name in ("logconf", "logconf_eleuther") and frac == 1.0]
    # per-micro-batch hardening (no global stats) would NOT match the one-device result
    assert all(naive_differs)
