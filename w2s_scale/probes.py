"""Probes on a model's activations that relabel or filter weak labels (EleutherAI w2s's probes).

Every function takes activations x [N, D] and soft labels y [N, K] (K = 2 for binary tasks) and
returns probabilities [N, K] or the indices of the examples kept. The binary case follows
EleutherAI's definitions (w2s/probe.py, w2s/topo.py, w2s/logistic.py), written here from their
description:

- kNN (k = 50): an example's new label is the mean soft label of its k nearest training points
  by Euclidean distance. The probe is fitted and queried on the same points, so a point is its
  own nearest neighbour (distance 0), as in EleutherAI's use.
- logistic regression: a linear model, zero-initialised, fitted to the soft labels by L-BFGS
  (strong Wolfe line search, up to 10,000 iterations) on the binary cross-entropy plus
  l2 * ||w||^2 (the bias is not penalised); binary tasks use one logit, as EleutherAI does,
  K > 2 classes a softmax over K logits (our extension).
- topological (TopoCC + zeta): the k-nearest-neighbour graph (self left out) restricted to each
  class's points (class = the label's argmax, i.e. p1 > 0.5 for binary labels); only the
  largest strongly connected component of each class is trusted. Relabel: the mean label of an
  example's k nearest trusted points. Filter: the untrusted points are dropped, then, among the
  trusted, those furthest from the mean label of their k nearest trusted neighbours, until the
  stated fraction is gone; when the components alone already drop more, nothing more is
  dropped (so topo may drop MORE than the fraction, as in EleutherAI).
- filter (knn, logreg): drop the floor(fraction x N) examples whose label differs most from the
  probe's prediction (total variation distance: |p1 - q1| for binary labels); ties keep the
  earlier example.
"""
from __future__ import annotations

import numpy as np
import torch

PROBE_KINDS = ("knn", "logreg", "topo")


CHUNK = 1024  # query rows per distance block: memory O(CHUNK x N), never N x N


def _nearest(x: np.ndarray, x_fit: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Indices [N, k] of each query's k nearest fitted points by Euclidean distance, nearest
    first, ties broken by index. `exclude_self`: x is x_fit and a point is not its own neighbour."""
    k = min(k, len(x_fit) - (1 if exclude_self else 0))
    fit = torch.as_tensor(x_fit, dtype=torch.float64)
    out = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), CHUNK):
        d = torch.cdist(torch.as_tensor(x[start:start + CHUNK], dtype=torch.float64), fit).numpy()
        if exclude_self:
            rows = np.arange(len(d))
            d[rows, start + rows] = np.inf
        kth = np.partition(d, k - 1, axis=1)[:, k - 1:k]
        for i, row in enumerate(d):
            candidates = np.flatnonzero(row <= kth[i])  # the k nearest and anything tied with the k-th
            out[start + i] = candidates[np.argsort(row[candidates], kind="stable")][:k]
    return out


def knn_predict(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray, k: int = 50) -> np.ndarray:
    """Mean soft label of each query's k nearest fitted points."""
    return y_fit[_nearest(x, x_fit, k)].mean(axis=1)


def logreg_predict(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray, l2: float = 1e-3,
                   max_iter: int = 10_000) -> np.ndarray:
    """A linear probe fitted to soft labels (see the module docstring); probabilities [N, K]."""
    xs = torch.as_tensor(x_fit, dtype=torch.float32)
    ys = torch.as_tensor(y_fit, dtype=torch.float32)
    k = ys.shape[1]
    binary = k == 2
    linear = torch.nn.Linear(xs.shape[1], 1 if binary else k)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), line_search_fn="strong_wolfe",
                                  max_iter=max_iter)

    def closure():
        optimizer.zero_grad()
        logits = linear(xs)
        if binary:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(-1), ys[:, 1])
        else:
            loss = -(ys * torch.log_softmax(logits, -1)).sum(-1).mean()
        loss = loss + l2 * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        logits = linear(torch.as_tensor(x, dtype=torch.float32))
        if binary:
            p1 = torch.sigmoid(logits.squeeze(-1))
            return torch.stack([1 - p1, p1], -1).numpy().astype(np.float64)
        return torch.softmax(logits, -1).numpy().astype(np.float64)


def _largest_component(adjacency) -> np.ndarray:
    from scipy.sparse.csgraph import connected_components

    n_parts, part = connected_components(adjacency, connection="strong")
    return part == np.bincount(part, minlength=n_parts).argmax()


def topo_trusted(x: np.ndarray, y: np.ndarray, k: int = 50) -> np.ndarray:
    """TopoCC: a mask of the points in their class's largest strongly connected component of
    the k-nearest-neighbour graph (self left out), kept sparse (N x k edges)."""
    from scipy.sparse import csr_matrix

    near = _nearest(x, x, k, exclude_self=True)
    src = np.repeat(np.arange(len(x)), near.shape[1])
    dst = near.ravel()
    cls = y.argmax(1)
    trusted = np.zeros(len(x), dtype=bool)
    for c in np.unique(cls):
        # edges between points of class c; a point of another class is then its own component
        keep = (cls[src] == c) & (cls[dst] == c)
        graph = csr_matrix((np.ones(keep.sum(), dtype=np.int8), (src[keep], dst[keep])),
                           shape=(len(x), len(x)))
        trusted |= _largest_component(graph) & (cls == c)
    return trusted


def topo_predict(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray, k: int = 50) -> np.ndarray:
    """Mean label of each query's k nearest trusted (TopoCC) fitted points."""
    trusted = topo_trusted(x_fit, y_fit, k)
    return knn_predict(x_fit[trusted], y_fit[trusted], x, k)


def predict(kind: str, x: np.ndarray, y: np.ndarray, k: int = 50, l2: float = 1e-3) -> np.ndarray:
    """The probe fitted on (x, y) and queried on x: the relabelled soft labels [N, K]."""
    if kind == "knn":
        return knn_predict(x, y, x, k)
    if kind == "logreg":
        return logreg_predict(x, y, x, l2)
    if kind == "topo":
        return topo_predict(x, y, x, k)
    raise ValueError(f"unknown probe kind {kind!r}; choose one of {PROBE_KINDS}")


def disagreement(probe: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Total variation distance between two label distributions (|p1 - q1| for K = 2)."""
    return 0.5 * np.abs(probe - labels).sum(1)


def drop_most_disagreeing(probe: np.ndarray, labels: np.ndarray, fraction: float) -> np.ndarray:
    """Indices kept (in their original order) after dropping floor(fraction * N) examples
    whose label disagrees most with the probe's."""
    n_drop = int(fraction * len(labels))
    order = np.argsort(-disagreement(probe, labels), kind="stable")
    return np.sort(order[n_drop:])


def topo_filter(x: np.ndarray, y: np.ndarray, fraction: float, k: int = 50) -> np.ndarray:
    """TopoCC, then zeta filtering among the trusted points (module docstring); kept indices."""
    trusted = np.flatnonzero(topo_trusted(x, y, k))
    xt, yt = x[trusted], y[trusted]
    neighbour_mean = yt[_nearest(xt, xt, k, exclude_self=True)].mean(axis=1)
    n_more = max(round(len(x) * fraction) - (len(x) - len(trusted)), 0)
    order = np.argsort(-disagreement(neighbour_mean, yt), kind="stable")
    return np.sort(trusted[order[n_more:]])


def filter_indices(kind: str, x: np.ndarray, y: np.ndarray, fraction: float, k: int = 50,
                   l2: float = 1e-3) -> np.ndarray:
    """Indices of the examples a probe filter keeps."""
    if kind == "topo":
        return topo_filter(x, y, fraction, k)
    return drop_most_disagreeing(predict(kind, x, y, k, l2), y, fraction)
