"""PGR aggregated over pairs and datasets; pure functions of the per-seed transfer rows that
report.summarize produces (one per transfer run: seed, weak, strong, loss, weak/ceiling/transfer
accuracy and AUC; a `dataset` key where there are several).

PGR has one definition (metrics.PGR_DEFINITION, the reference's plotting notebook): the weak and
the ceiling model's scores averaged over seeds per model (w̄, c̄); each transfer run against those
means, (t_s - w̄) / (c̄ - w̄) (metrics.pgr); kept where weak != strong and c̄ > w̄; the MEDIAN over
the kept runs. Here the median is over all kept (weak, strong) pairs and seeds per loss, as the
notebook does; on accuracy and on ROC AUC (EleutherAI's metric). Every table says how many runs,
pairs and seeds it rests on, and how many were dropped and why.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from w2s_scale.metrics import PGR_DEFINITION, pgr

METRICS = ("acc", "auc")
DROP_SELF = "weak == strong"
DROP_GAP = "ceiling mean <= weak mean"
DROP_MISSING = "score missing"


def per_seed(rows: Iterable[dict]) -> list[dict]:
    """The per-run rows (report.summarize also appends one mean row per pair)."""
    return [r for r in rows if r.get("seed") not in ("mean", "median")]


def model_means(rows: Iterable[dict], metric: str = "acc") -> dict[tuple, Optional[float]]:
    """{(dataset, model): score averaged over seeds}. A model's gt score at one seed is read from
    every row that uses it (as weak or as ceiling), averaged (they agree unless over-long test
    examples differ between tokenizers), then averaged over seeds."""
    by_seed: dict[tuple, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in per_seed(rows):
        for role, model in (("weak", r["weak"]), ("ceiling", r["strong"])):
            value = r.get(f"{role}_{metric}")
            if value is not None:
                by_seed[(r.get("dataset"), model)][r["seed"]].append(float(value))
    return {key: float(np.mean([np.mean(v) for v in seeds.values()])) if seeds else None
            for key, seeds in by_seed.items()}


def pgr_against_means(row: dict, means: dict[tuple, Optional[float]], metric: str = "acc"
                      ) -> tuple[Optional[float], Optional[str]]:
    """(PGR of one transfer run against the seed-mean weak and ceiling scores, None) or
    (None, why it is dropped)."""
    if row["weak"] == row["strong"]:
        return None, DROP_SELF
    w = means.get((row.get("dataset"), row["weak"]))
    c = means.get((row.get("dataset"), row["strong"]))
    t = row.get(f"transfer_{metric}")
    if w is None or c is None or t is None:
        return None, DROP_MISSING
    value = pgr(w, c, float(t))
    return (None, DROP_GAP) if value is None else (value, None)


def _kept(rows: Iterable[dict], means: dict, metric: str) -> tuple[list[tuple[dict, float]], dict]:
    """The runs kept with their PGR against the means, and {why dropped: how many}."""
    kept, reasons = [], defaultdict(int)
    for r in rows:
        value, why = pgr_against_means(r, means, metric)
        if why:
            reasons[why] += 1
        else:
            kept.append((r, value))
    return kept, reasons


def _dropped_text(reasons: dict[str, int]) -> str:
    return "; ".join(f"{n} {why}" for why, n in sorted(reasons.items()) if n) or "none"


# --- test subsets (the testbed's in- and out-of-distribution test sets: w2s_scale/subsets.py) ---
# A row of report.summarize holds each subset's scores under "subset.<name>.<key>"; projected onto
# one subset, the same row has them at the plain keys, so every table is computed per subset by
# the same functions. Rows of datasets without subsets have none of these keys.

SUBSET_KEYS = ("weak_acc", "ceiling_acc", "transfer_acc", "weak_auc", "ceiling_auc",
               "transfer_auc", "pgr", "pgr_lo", "pgr_hi", "pgr_auc", "n_test")


def subset_key(name: str, key: str) -> str:
    return f"subset.{name}.{key}"


def subset_names(rows: Iterable[dict]) -> list[str]:
    """The test subsets the rows have scores for, in name order ([] for most datasets)."""
    return sorted({k.split(".", 2)[1] for r in rows for k in r if k.startswith("subset.")})


def on_subset(rows: Iterable[dict], name: str) -> list[dict]:
    """The rows that have scores for subset `name`, those scores at the plain keys."""
    out = []
    for r in rows:
        if subset_key(name, "transfer_acc") in r:
            out.append({**{k: v for k, v in r.items() if not k.startswith("subset.")},
                        **{key: r.get(subset_key(name, key)) for key in SUBSET_KEYS}})
    return out


def paper_pgr(rows: Iterable[dict]) -> list[dict]:
    """One row per (dataset, loss, metric): the median PGR over every kept (weak, strong) pair
    and seed (each run against its pair's seed means); then the same per test subset, where the
    data have subsets (rows with a "subset" key)."""
    rows = per_seed(rows)
    return _paper_pgr(rows) + [{**r, "subset": name} for name in subset_names(rows)
                               for r in _paper_pgr(on_subset(rows, name))]


def _paper_pgr(rows: list[dict]) -> list[dict]:
    out = []
    for metric in METRICS:
        means = model_means(rows, metric)
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in rows:
            groups[(r.get("dataset"), r["loss"])].append(r)
        for (dataset, loss), members in groups.items():
            kept, reasons = _kept(members, means, metric)
            out.append({
                "dataset": dataset, "loss": loss, "metric": metric,
                "pgr_median": float(np.median([v for _, v in kept])) if kept else None,
                "n_runs": len(kept), "n_pairs": len({(r["weak"], r["strong"]) for r, _ in kept}),
                "n_seeds": len({r["seed"] for r, _ in kept}),
                "n_dropped": len(members) - len(kept), "dropped": _dropped_text(reasons)})
    return out


def pair_paper_pgr(rows: Iterable[dict], dataset, weak: str, strong: str, loss: str,
                   metric: str = "acc", means: Optional[dict] = None) -> tuple[Optional[float], int, str]:
    """The PGR of one (weak, strong, loss) (metrics.PGR_DEFINITION): median over seeds against
    the seed means; with the number of runs it rests on and what was dropped."""
    rows = [r for r in per_seed(rows) if r.get("dataset") == dataset and r["weak"] == weak
            and r["strong"] == strong and r["loss"] == loss]
    means = model_means(rows, metric) if means is None else means
    kept, reasons = _kept(rows, means, metric)
    values = [v for _, v in kept]
    return (float(np.median(values)) if values else None), len(values), _dropped_text(reasons)


def cross_dataset(rows: Iterable[dict], order: Optional[Sequence[str]] = None) -> list[dict]:
    """Per dataset and loss, the widest pair (the first and the last model of `order`; without
    an order, the pair with the largest ceiling - weak gap): weak, ceiling and transfer accuracy
    (means over seeds), the reference's PGR on accuracy and AUC, and the median PGR over all
    pairs; then, per loss, the median of each column across datasets (of the widest pair: not
    the paper's figure-3 summary, which keeps one line per supervisor: figures.tables).
    Then the same per test subset, where the data have subsets (rows with a "subset" key)."""
    rows = per_seed(rows)
    return _cross_dataset(rows, order) + [{**r, "subset": name} for name in subset_names(rows)
                                          for r in _cross_dataset(on_subset(rows, name), order)]


def _cross_dataset(rows: list[dict], order: Optional[Sequence[str]]) -> list[dict]:
    acc_means, auc_means = model_means(rows, "acc"), model_means(rows, "auc")
    all_pairs = {(r["dataset"], r["loss"]): r for r in _paper_pgr(rows) if r["metric"] == "acc"}
    out = []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get("dataset"), r["loss"])].append(r)
    for (dataset, loss), members in groups.items():
        pairs = {(r["weak"], r["strong"]) for r in members if r["weak"] != r["strong"]}
        if not pairs:
            continue
        if order and (order[0], order[-1]) in pairs:
            weak, strong = order[0], order[-1]
        else:
            weak, strong = max(sorted(pairs), key=lambda p: (acc_means.get((dataset, p[1])) or 0)
                               - (acc_means.get((dataset, p[0])) or 0))
        chosen = [r for r in members if (r["weak"], r["strong"]) == (weak, strong)]
        pgr_acc, n_runs, dropped = pair_paper_pgr(rows, dataset, weak, strong, loss, "acc", acc_means)
        pgr_auc, _, _ = pair_paper_pgr(rows, dataset, weak, strong, loss, "auc", auc_means)
        out.append({"dataset": dataset, "loss": loss, "weak": weak, "strong": strong,
                    "weak_acc": acc_means.get((dataset, weak)),
                    "ceiling_acc": acc_means.get((dataset, strong)),
                    "transfer_acc": float(np.mean([r["transfer_acc"] for r in chosen])),
                    "pgr": pgr_acc, "pgr_auc": pgr_auc, "n_seeds": n_runs, "dropped": dropped,
                    "pgr_median_all_pairs": all_pairs.get((dataset, loss), {}).get("pgr_median")})
    for loss in dict.fromkeys(r["loss"] for r in out):
        part = [r for r in out if r["loss"] == loss]
        row: dict[str, Any] = {"dataset": f"median of {len(part)}", "loss": loss, "weak": "",
                               "strong": "", "dropped": ""}
        for key in ("weak_acc", "ceiling_acc", "transfer_acc", "pgr", "pgr_auc",
                    "pgr_median_all_pairs"):
            values = [r[key] for r in part if r[key] is not None]
            row[key] = float(np.median(values)) if values else None
            if key == "pgr":
                row["n_datasets"] = len(values)  # datasets whose PGR is defined
        out.append(row)
    return out


# --- text ----------------------------------------------------------------------------------------

def _num(value, digits: int = 3) -> str:
    if value is None:
        return "undefined"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], lines: list[list[str]]) -> str:
    lines = [header] + lines
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _with_subset(header: list[str], lines: list[list[str]], rows: list[dict]) -> tuple[list, list]:
    """A "test subset" column after the dataset, only where some row is of a subset."""
    if not any("subset" in r for r in rows):
        return header, lines
    return ([header[0], "test subset", *header[1:]],
            [[line[0], r.get("subset", "all"), *line[1:]] for line, r in zip(lines, rows)])


def format_paper_pgr(rows: list[dict]) -> str:
    lines = [[str(r["dataset"] or "-"), r["loss"], r["metric"], _num(r["pgr_median"]),
              f"{r['n_runs']} runs, {r['n_pairs']} pairs, {r['n_seeds']} seeds",
              f"{r['n_dropped']} ({r['dropped']})"] for r in rows]
    header, lines = _with_subset(["dataset", "loss", "metric", "median PGR", "rests on", "dropped"],
                                 lines, rows)
    return (f"{PGR_DEFINITION}\nmedian PGR per dataset and loss: over the runs of all kept (weak, "
            "strong) pairs, each against its pair's seed means, as the reference's plots\n"
            + _table(header, lines))


def format_cross_dataset(rows: list[dict]) -> str:
    lines = [[str(r["dataset"] or "-"), r["loss"], f"{r['weak']}->{r['strong']}" if r["weak"] else "",
              _num(r["weak_acc"]), _num(r["ceiling_acc"]), _num(r["transfer_acc"]), _num(r["pgr"]),
              _num(r["pgr_auc"]), _num(r["pgr_median_all_pairs"]),
              f"{r['n_datasets']} datasets" if "n_datasets" in r else f"{r['n_seeds']} seeds"]
             for r in rows]
    header, lines = _with_subset(["dataset", "loss", "pair", "weak", "ceiling", "transfer", "PGR",
                                  "AUC-PGR", "median PGR all pairs", "rests on"], lines, rows)
    return (f"{PGR_DEFINITION}\nacross datasets: the widest pair of each dataset, then the "
            "median across datasets\n" + _table(header, lines))
