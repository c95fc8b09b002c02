"""Paper-style scaling figures of a sweep (Burns et al. 2023, figure 3 style) and their tables.

PGR everywhere here is its one definition, metrics.PGR_DEFINITION (stated on every figure and
table), with 95% two-level bootstrap intervals over seeds and test examples (intervals.py).

From the finished runs' test predictions, `tables()` gives three tables from one bootstrap per
curve point:
  - points: one row per curve point: the weak supervisors' own accuracy, the ceiling (each strong
    model trained on ground truth), and each (weak, strong, loss) transfer accuracy and PGR, per
    dataset; accuracy intervals stay within [0, 1].
  - summary: the paper's cross-dataset summary (its figure 3 over the NLP tasks): per loss, one
    line per weak supervisor, each (supervisor, student) point the median across datasets of its
    accuracy and PGR; the ceiling and each supervisor alone likewise.
  - pooled: median PGR over datasets and weak supervisors together per loss and student; not the
    paper's summary, and named "pooled over supervisors" wherever it is shown.
draw(): per dataset and loss, accuracy and PGR against the student's parameter count on a log
axis; a grid over datasets per loss; the summary per loss; the pooled figure. PNG files.
"""
from __future__ import annotations

import csv
import io
import json
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from w2s_scale import intervals, predictions
from w2s_scale.files import atomic_write
from w2s_scale.metrics import PGR_DEFINITION
from w2s_scale.results import RunDir
from w2s_scale.sweep import disk_state

# the `dataset` of the summary's rows, and so the title of its panels
ACROSS = "median across datasets"
POOLED_CAPTION = "median PGR pooled over datasets and weak supervisors (not the paper's summary)"
POOLED_FIGURE = "pooled-median-pgr.png"


@dataclass(frozen=True)
class RunResult:
    """One finished run: which test examples it got right."""
    dataset: str
    seed: int
    model: str                 # the trained model (the student of a transfer run)
    weak: Optional[str]        # transfer runs: the supervisor; None for ground-truth runs
    loss: Optional[str]        # transfer runs: the loss tag
    correct: dict[str, bool]   # test example id -> classified correctly


def load_results(runs) -> list[RunResult]:
    """The finished runs of a sweep (w2s_scale.sweep.SweepRun), read from their folders."""
    out = []
    for run in runs:
        # label stages predict nothing on test; an ensemble member's extra seed is no curve point
        if disk_state(run) != "done" or run.plan.kind not in ("gt", "transfer", "method") or run.plan.seed_offset:
            continue
        plan = run.plan
        student = plan.kind in ("transfer", "method")  # a method run is drawn as a transfer
        preds = RunDir(plan.dir, plan.hash).read_jsonl("test_predictions.jsonl")
        out.append(RunResult(
            dataset=run.dataset, seed=plan.seed, model=plan.model.short_name,
            weak=plan.weak.model.short_name if student else None,
            loss=plan.variant if student else None,
            correct={r["id"]: predictions.correct(r) for r in preds}))
    return out


def _aligned(*runs: RunResult) -> list[np.ndarray]:
    """Correct-or-not arrays on the examples all runs scored (over-long ones may differ)."""
    ids = sorted(set.intersection(*(set(r.correct) for r in runs)))
    return [np.array([r.correct[i] for i in ids], dtype=float) for r in runs]


def _index(results: list[RunResult]):
    gt = {(r.dataset, r.model, r.seed): r for r in results if r.weak is None}
    transfer = defaultdict(dict)  # (dataset, loss, weak, strong) -> {seed: run}
    for r in results:
        if r.weak is not None:
            transfer[(r.dataset, r.loss, r.weak, r.model)][r.seed] = r
    return gt, transfer


def _triples(gt, dataset: str, weak: str, strong: str, by_seed: dict) -> list[list[np.ndarray]]:
    """Per seed: (weak, ceiling, transfer) aligned, for seeds where all three finished."""
    return [_aligned(gt[(dataset, weak, s)], gt[(dataset, strong, s)], run)
            for s, run in sorted(by_seed.items())
            if (dataset, weak, s) in gt and (dataset, strong, s) in gt]


def _median_row(per_dataset: list[tuple[intervals.Estimate, list]], key: str) -> dict:
    """{key, key_lo, key_hi}: the median across datasets of their values, its interval from their
    bootstrap draws taken draw by draw; datasets whose value is undefined are left out."""
    defined = [(est, draws) for est, draws in per_dataset if est.value is not None]
    if not defined:
        return {key: None, f"{key}_lo": None, f"{key}_hi": None}
    value, lo, hi = intervals.median_interval([d for _, d in defined], [e.value for e, _ in defined])
    return {key: value, f"{key}_lo": lo, f"{key}_hi": hi}


def tables(results: list[RunResult], sizes: dict[str, Optional[int]], n_boot: int = intervals.N_BOOT,
           ) -> tuple[list[dict], list[dict], list[dict]]:
    """(points, summary, pooled): see the module's docstring. Every point's bootstrap runs once,
    with seed 0 as report.summarize's, so a point's interval reads the same in every table; the
    summaries take medians of those draws. (Datasets share the random stream but not their
    data, so their draws stay uncorrelated; tasks sharing a ceiling draw it alike, as they
    should.)"""
    gt, transfer = _index(results)
    weak_models = {k[2] for k in transfer}
    strong_models = {k[3] for k in transfer}
    points, summary = [], []
    alone = defaultdict(list)  # (role, model) -> [(estimate, draws)] over datasets
    for role, models in (("weak", weak_models), ("ceiling", strong_models)):
        for dataset, model in sorted({(d, m) for d, m, _ in gt if m in models}):
            seeds = [r for (d, m, _), r in sorted(gt.items()) if (d, m) == (dataset, model)]
            est, draws = intervals.accuracy_with_draws(
                [np.array(list(r.correct.values()), dtype=float) for r in seeds], n_boot)
            alone[(role, model)].append((est, draws))
            points.append({"kind": role, "dataset": dataset, "loss": None, "weak": None, "strong": model,
                           "params": sizes.get(model), **est.as_dict("accuracy"),
                           "n_seeds": est.n_seeds, "n_test": est.n_examples})
    by_point = defaultdict(list)  # (loss, weak, strong) -> per dataset: (dataset, acc, pgr, triples)
    for (dataset, loss, weak, strong), by_seed in sorted(transfer.items()):
        triples = _triples(gt, dataset, weak, strong, by_seed)
        if not triples:
            continue
        acc = intervals.accuracy_with_draws([t[2] for t in triples], n_boot)
        pgr = intervals.pgr_with_draws(triples, n_boot)
        by_point[(loss, weak, strong)].append((dataset, acc, pgr, triples))
        points.append({"kind": "transfer", "dataset": dataset, "loss": loss, "weak": weak, "strong": strong,
                       "params": sizes.get(strong), "weak_params": sizes.get(weak),
                       **acc[0].as_dict("accuracy"), **pgr[0].as_dict("pgr"),
                       "weak_accuracy": float(np.mean([t[0].mean() for t in triples])),
                       "ceiling_accuracy": float(np.mean([t[1].mean() for t in triples])),
                       "n_seeds": acc[0].n_seeds, "n_test": acc[0].n_examples})
    # the paper's summary: rows of the same kinds as points, dataset ACROSS
    for (role, model), members in sorted(alone.items()):
        summary.append({"kind": role, "dataset": ACROSS, "loss": None, "weak": None, "strong": model,
                        "params": sizes.get(model), **_median_row(members, "accuracy"),
                        "n_datasets": len(members), "n_seeds": min(e.n_seeds for e, _ in members),
                        "n_test": min(e.n_examples for e, _ in members)})
    for (loss, weak, strong), members in sorted(by_point.items()):
        pgr_defined = [p for _, _, p, _ in members if p[0].value is not None]
        summary.append({"kind": "transfer", "dataset": ACROSS, "loss": loss, "weak": weak, "strong": strong,
                        "params": sizes.get(strong), "weak_params": sizes.get(weak),
                        **_median_row([a for _, a, _, _ in members], "accuracy"),
                        **_median_row([p for _, _, p, _ in members], "pgr"),
                        "n_datasets": len(members), "n_datasets_pgr": len(pgr_defined),
                        "datasets": ", ".join(d for d, _, _, _ in members),
                        "n_seeds": min(a[0].n_seeds for _, a, _, _ in members),
                        "n_test": min(a[0].n_examples for _, a, _, _ in members)})
    return points, summary, _pooled(by_point, sizes)


def _pooled(by_point: dict, sizes: dict[str, Optional[int]]) -> list[dict]:
    """Median PGR over tasks (dataset x weak supervisor, self-supervision left out) per loss and
    student, with an interval from the tasks' bootstrap draws: pooled over supervisors."""
    tasks = defaultdict(list)  # (loss, strong) -> [(estimate, draws)]
    for (loss, weak, strong), members in sorted(by_point.items()):
        if weak != strong:
            tasks[(loss, strong)] += [pgr for _, _, pgr, _ in members if pgr[0].value is not None]
    rows = []
    for (loss, strong), members in sorted(tasks.items()):
        value, lo, hi = intervals.median_interval([d for _, d in members], [e.value for e, _ in members])
        rows.append({"loss": loss, "strong": strong, "params": sizes.get(strong), "median_pgr": value,
                     "median_pgr_lo": lo, "median_pgr_hi": hi, "n_tasks": len(members)})
    return rows


def points(results: list[RunResult], sizes: dict[str, Optional[int]], n_boot: int = intervals.N_BOOT) -> list[dict]:
    """The curve points per dataset (tables()[0])."""
    return tables(results, sizes, n_boot)[0]


# --- the table as files ---------------------------------------------------------------------------

def _fmt(v, lo=None, hi=None) -> str:
    if v is None:
        return "undefined"
    return f"{v:.3f}" + ("" if lo is None else f" [{lo:.3f}, {hi:.3f}]")


def _point_table(rows: list[dict], rests_on: str) -> list[str]:
    """Rows of points() or of the summary as aligned lines; `rests_on`: "seeds" or "datasets"."""
    head = ["dataset", "loss", "weak", "strong", "params", rests_on, "accuracy [95%]", "PGR [95%]"]
    lines = [head]
    for r in rows:
        if rests_on == "seeds":
            count = str(r["n_seeds"])
        else:  # a point's PGR may rest on fewer datasets than its accuracy (undefined elsewhere)
            count = str(r["n_datasets"]) + (f" (PGR: {r['n_datasets_pgr']})"
                                            if r.get("n_datasets_pgr", r["n_datasets"]) != r["n_datasets"] else "")
        lines.append([r["dataset"], r["loss"] or "-", r["weak"] or ("(weak alone)" if r["kind"] == "weak" else "(ceiling)"),
                      r["strong"], size_label(r["params"]), count,
                      _fmt(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"]),
                      _fmt(r["pgr"], r["pgr_lo"], r["pgr_hi"]) if r["kind"] == "transfer" else ""])
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in lines]


def format_points(rows: list[dict], summary_rows: list[dict], pooled_rows: list[dict]) -> str:
    """The curve points, the paper's summary and the pooled medians as plain tables, 95%
    bootstrap intervals in brackets, under the PGR definition."""
    text = [PGR_DEFINITION, "",
            "curve points (accuracy: mean over seeds; 95% bootstrap over seeds and test examples)"]
    text += _point_table(rows, "seeds")
    if summary_rows:
        text += ["", "the paper's summary (Burns et al. 2023, figure 3): per weak supervisor and student, "
                 "the median across datasets; 95%: each dataset's bootstrap draws, median taken draw by draw"]
        text += _point_table(summary_rows, "datasets")
    if pooled_rows:
        text += ["", POOLED_CAPTION]
        text += [f"  {r['loss']:<10} {r['strong']:<18} {size_label(r['params']):>7}  "
                 f"{_fmt(r['median_pgr'], r['median_pgr_lo'], r['median_pgr_hi'])}  ({r['n_tasks']} tasks)"
                 for r in pooled_rows]
    return "\n".join(text)


# the tables' files: scaling_summary is the paper's summary, scaling_pooled_median_pgr the pooled one
TABLE_STEMS = ("scaling_points", "scaling_summary", "scaling_pooled_median_pgr")


def write_table(rows: list[dict], summary_rows: list[dict], pooled_rows: list[dict], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, table in zip(TABLE_STEMS, (rows, summary_rows, pooled_rows)):
        fields = list(dict.fromkeys(k for r in table for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)
        atomic_write(out_dir / f"{stem}.csv", buffer.getvalue())
        atomic_write(out_dir / f"{stem}.json", json.dumps(table, indent=2) + "\n")
        written += [out_dir / f"{stem}.csv", out_dir / f"{stem}.json"]
    atomic_write(out_dir / "scaling_points.txt", format_points(rows, summary_rows, pooled_rows) + "\n")
    return written + [out_dir / "scaling_points.txt"]


# --- figures ---------------------------------------------------------------------------------------

def size_label(n: Optional[int]) -> str:
    if n is None:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def _weak_colors(rows: list[dict]) -> dict[str, tuple]:
    """Supervisors coloured by size: small = dark purple, large = orange (plasma, without its
    pale yellow end, which vanishes on white)."""
    import matplotlib

    weak = sorted({r["strong"] for r in rows if r["kind"] == "weak"},
                  key=lambda m: next(r["params"] or 0 for r in rows if r["strong"] == m))
    cmap = matplotlib.colormaps["plasma"]
    return {w: cmap(0.1 + 0.65 * i / max(1, len(weak) - 1)) for i, w in enumerate(weak)}


def _err(rows: list[dict], key: str) -> np.ndarray:
    """Asymmetric error bars from [lo, hi]; zero length where no interval could be formed."""
    lo = [r[key] - r[f"{key}_lo"] if r[f"{key}_lo"] is not None else 0.0 for r in rows]
    hi = [r[f"{key}_hi"] - r[key] if r[f"{key}_hi"] is not None else 0.0 for r in rows]
    return np.array([lo, hi])


def _dodge(xs: list, index: int, count: int) -> list:
    """Shift the lines of different supervisors a little apart on the log axis, so that their
    error bars at the same student do not hide each other."""
    factor = 1.05 ** (index - (count - 1) / 2)
    return [x * factor for x in xs]


# how the students' training kinds are drawn apart (ModelConfig.training_kind): a frozen probe and
# a fine-tuned model of one size are two students, never one line through the same x
TRACK_STYLES = {"fine-tuned": ("-", "o"), "frozen probe": ("-.", "D")}


def _by_track(rows: list[dict], tracks: dict[str, str]) -> list[tuple[str, list[dict]]]:
    """The rows split by their student's training kind (one line each), small -> large; a
    student with no kind given counts as fine-tuned."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tracks.get(r["strong"], "fine-tuned")].append(r)
    return [(t, sorted(g, key=lambda r: r["params"])) for t, g in sorted(groups.items())]


def _style(track: str) -> tuple[str, str]:
    return TRACK_STYLES.get(track, (":", "^"))


def _name_points(ax, rows: list[dict], names: dict[str, str]) -> None:
    """Write each model's name (its label as the sweep gives it) by its point; neighbours closer
    than 1.6x in size lean apart so their names do not overlap."""
    rows = sorted(rows, key=lambda r: r["params"])
    for i, r in enumerate(rows):
        near_next = i + 1 < len(rows) and rows[i + 1]["params"] < 1.6 * r["params"]
        near_prev = i > 0 and r["params"] < 1.6 * rows[i - 1]["params"]
        ha, dx = ("right", -4) if near_next else ("left", 4) if near_prev else ("center", 0)
        ax.annotate(names.get(r["strong"], r["strong"]), (r["params"], r["accuracy"]), textcoords="offset points",
                    xytext=(dx, 8), ha=ha, fontsize=7)


def _log_axis(ax, ticks: dict[int, str]) -> None:
    """Log axis of parameters with a tick at every model size, labelled by size; names go in the
    legend and beside the points, so ticks never crowd."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.set_xticks(sorted(ticks))
    ax.set_xticklabels([ticks[t] for t in sorted(ticks)], fontsize=7, rotation=45, ha="right")
    ax.xaxis.set_minor_locator(NullLocator())
    lo, hi = min(ticks), max(ticks)
    ax.set_xlim(lo / 1.6, hi * 1.6)
    ax.set_xlabel("parameters of the model (log scale)")
    ax.grid(alpha=0.3)


# PGR's axis shows -2..2 at most: where the ceiling barely beats the weak supervisor, PGR and its
# interval run to -30 or +30 and would squash every other point to a flat line at 0.
PGR_VIEW = (-2.0, 2.0)


def _pgr_axis(ax, plotted: list[tuple[float, float, float, float, object]]) -> None:
    """Limit PGR's axis to PGR_VIEW, always keeping 0 (weak) and 1 (ceiling) in view. `plotted`
    holds (x, value, lo, hi, colour) of each point drawn: a point beyond the view is marked by an
    arrow head at the edge in its colour, and a note says the view was cut."""
    low, high = ax.get_ylim()
    view = (max(min(low, -0.1), PGR_VIEW[0]), min(max(high, 1.1), PGR_VIEW[1]))
    ax.set_ylim(*view)
    cut = False
    for x, value, lo, hi, color in plotted:
        if value is None:
            continue
        cut |= (lo if lo is not None else value) < view[0] or (hi if hi is not None else value) > view[1]
        if value < view[0] or value > view[1]:
            edge, marker = (view[0], "v") if value < view[0] else (view[1], "^")
            ax.plot([x], [edge], marker=marker, color=color, markersize=8, clip_on=False, linestyle="none")
            ax.annotate(f"{value:.1f}", (x, edge), textcoords="offset points", fontsize=7, color=color,
                        xytext=(6, 4 if marker == "v" else -10))
    if cut:
        ax.text(0.02, 0.98, f"axis cut at PGR {view[0]:.2g}..{view[1]:.2g}: arrow heads and bars\nat the edge "
                "go on (values in scaling_points.txt)", transform=ax.transAxes, fontsize=6,
                color="grey", ha="left", va="top")


def _seeds_note(rows: list[dict], what: str = "mean of") -> str:
    seeds = sorted({r["n_seeds"] for r in rows})
    n_test = min(r["n_test"] for r in rows)
    seed_text = "/".join(map(str, seeds)) + (" seed" if seeds == [1] else " seeds")
    over = f"{n_test} test examples" if seeds == [1] else f"seeds and {n_test} test examples"
    return f"{what} {seed_text}; bars: 95% bootstrap over {over}"


# the legend title of the summary's panels: what each point and bar is
ACROSS_NOTE = ("median across datasets of each dataset's point; bars: 95% bootstrap over seeds "
               "and test examples within each dataset, median across datasets per draw")


def _accuracy_panel(ax, rows: list[dict], dataset: str, loss: str, colors: dict, legend: bool = True,
                    names: Optional[dict[str, str]] = None, note: Optional[str] = None,
                    tracks: Optional[dict[str, str]] = None) -> None:
    names, tracks = names or {}, tracks or {}
    weak_rows = [r for r in rows if r["kind"] == "weak" and r["dataset"] == dataset]
    ceiling = sorted((r for r in rows if r["kind"] == "ceiling" and r["dataset"] == dataset),
                     key=lambda r: r["params"])
    transfer = [r for r in rows if r["kind"] == "transfer" and r["dataset"] == dataset and r["loss"] == loss]
    ticks = {r["params"]: size_label(r["params"]) for r in weak_rows + ceiling}
    ceiling_tracks = _by_track(ceiling, tracks)
    for track, part in ceiling_tracks:
        what = f", {track}" if len(ceiling_tracks) > 1 else ""
        ax.errorbar([r["params"] for r in part], [r["accuracy"] for r in part], yerr=_err(part, "accuracy"),
                    color="black", linestyle="--" if track == "fine-tuned" else _style(track)[0],
                    marker="s", markersize=5, capsize=3,
                    label=f"strong ceiling (trained on ground truth{what})")
    if ceiling:
        _name_points(ax, ceiling, names)
    for i, w in enumerate(colors):
        own = next((r for r in weak_rows if r["strong"] == w), None)
        line = sorted((r for r in transfer if r["weak"] == w and r["strong"] != w), key=lambda r: r["params"])
        if own is None and not line:
            continue
        name = names.get(w, w)
        if own is not None:
            ax.errorbar([own["params"]], [own["accuracy"]], yerr=_err([own], "accuracy"), color=colors[w],
                        marker="*", markersize=11, capsize=3, linestyle="none")
            ax.axhline(own["accuracy"], color=colors[w], linestyle=":", linewidth=1, alpha=0.7)
        line_tracks = _by_track(line, tracks)
        for track, part in line_tracks:
            what = f", {track} students" if len(line_tracks) > 1 else ""
            style, marker = _style(track)
            ax.errorbar(_dodge([r["params"] for r in part], i, len(colors)), [r["accuracy"] for r in part],
                        yerr=_err(part, "accuracy"), color=colors[w], marker=marker, markersize=5, capsize=3,
                        linestyle=style,
                        label=f"strong supervised by {name} ({size_label(own['params'] if own else None)}; "
                              f"\u2605 and dotted line: {name} alone{what})")
    _log_axis(ax, ticks)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{dataset}, {loss}: test accuracy", fontsize=10)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  title=textwrap.fill(note or _seeds_note(weak_rows + ceiling + transfer), 80),
                  title_fontsize=7)


def _pgr_panel(ax, rows: list[dict], dataset: str, loss: str, colors: dict, legend: bool = True,
               names: Optional[dict[str, str]] = None, note: Optional[str] = None,
               tracks: Optional[dict[str, str]] = None) -> None:
    names, tracks = names or {}, tracks or {}
    transfer = [r for r in rows if r["kind"] == "transfer" and r["dataset"] == dataset and r["loss"] == loss
                and r["weak"] != r["strong"]]
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axhline(1, color="black", linewidth=0.8, linestyle="--")
    ticks = {r["params"]: size_label(r["params"]) for r in transfer}
    plotted = []
    for i, w in enumerate(colors):
        line = [r for r in transfer if r["weak"] == w and r["pgr"] is not None]
        line_tracks = _by_track(line, tracks)
        for track, part in line_tracks:
            what = f", {track} students" if len(line_tracks) > 1 else ""
            style, marker = _style(track)
            xs = _dodge([r["params"] for r in part], i, len(colors))
            ax.errorbar(xs, [r["pgr"] for r in part], yerr=_err(part, "pgr"),
                        color=colors[w], marker=marker, markersize=5, capsize=3, linestyle=style,
                        label=f"supervised by {names.get(w, w)} ({size_label(part[0]['weak_params'])}{what})")
            plotted += [(x, r["pgr"], r["pgr_lo"], r["pgr_hi"], colors[w]) for x, r in zip(xs, part)]
    if ticks:
        _log_axis(ax, ticks)
        ax.set_xlabel("parameters of the strong student (log scale)")
    _pgr_axis(ax, plotted)
    ax.set_ylabel("performance gap recovered (PGR)")
    ax.set_title(f"{dataset}, {loss}: PGR (1 = ceiling, 0 = weak)", fontsize=10)
    undefined = [r for r in transfer if r["pgr"] is None]
    if undefined:  # a reader must not take a missing point for a zero
        ax.text(0.02, 0.02, f"{len(undefined)} point(s) undefined: ceiling <= weak",
                transform=ax.transAxes, fontsize=7, color="grey")
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  title=textwrap.fill(note or _seeds_note(transfer, "PGR over"), 80), title_fontsize=7)


# the gid of the footnote that states the PGR definition on every figure (tests find it by it)
DEFINITION_GID = "pgr-definition"


def _finish(fig) -> None:
    """State the PGR definition at the foot of the figure, wrapped to its width, and lay the
    axes out above it (the legends below the axes stay clear of it)."""
    width, height = fig.get_size_inches()
    text = textwrap.fill(PGR_DEFINITION, width=int(width * 17))  # about 17 characters an inch at 7 pt
    fig.text(0.5, 0.005, text, ha="center", va="bottom", fontsize=7, color="dimgrey", gid=DEFINITION_GID)
    foot = (text.count("\n") + 1) * 0.13 / height + 0.01
    fig.tight_layout(rect=(0, foot, 1, 1))


def draw(rows: list[dict], summary_rows: list[dict], pooled_rows: list[dict], out_dir: Path,
         names: Optional[dict[str, str]] = None, tracks: Optional[dict[str, str]] = None) -> list[Path]:
    """Every figure as a PNG in out_dir; returns the paths written."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in build(rows, summary_rows, pooled_rows, names, tracks).items():
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)
    return written


def build(rows: list[dict], summary_rows: list[dict], pooled_rows: list[dict],
          names: Optional[dict[str, str]] = None, tracks: Optional[dict[str, str]] = None) -> dict:
    """Every figure (file name -> matplotlib Figure, laid out): per dataset and loss
    (<dataset>-<loss>.png), a grid per loss (grid-<loss>.png), the paper's cross-dataset summary
    per loss (summary-<loss>.png), the median pooled over supervisors (pooled-median-pgr.png).
    `names`: model -> the label the sweep gives it (legends and point names); `tracks`: student ->
    its training kind ("fine-tuned", "frozen probe"), each kind its own line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = names or {}
    colors = _weak_colors(rows + summary_rows)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    losses = list(dict.fromkeys(r["loss"] for r in rows + summary_rows if r["kind"] == "transfer"))
    figs = {}

    def save(fig, name: str) -> None:
        _finish(fig)
        figs[name] = fig

    for dataset in datasets:
        for loss in losses:
            fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.6))
            _accuracy_panel(left, rows, dataset, loss, colors, names=names, tracks=tracks)
            _pgr_panel(right, rows, dataset, loss, colors, names=names, tracks=tracks)
            save(fig, f"{dataset}-{loss}.png")
    for loss in losses:
        if not datasets:
            break
        fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 10.5), squeeze=False)
        for col, dataset in enumerate(datasets):
            _accuracy_panel(axes[0][col], rows, dataset, loss, colors, legend=col == 0, names=names,
                            tracks=tracks)
            _pgr_panel(axes[1][col], rows, dataset, loss, colors, legend=col == 0, names=names,
                       tracks=tracks)
        fig.suptitle(f"weak-to-strong scaling over datasets, loss {loss}", fontsize=11)
        save(fig, f"grid-{loss}.png")
    for loss in losses:
        if not any(r["loss"] == loss for r in summary_rows):
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.9))
        _accuracy_panel(left, summary_rows, ACROSS, loss, colors, names=names, note=ACROSS_NOTE,
                        tracks=tracks)
        _pgr_panel(right, summary_rows, ACROSS, loss, colors, names=names, note=ACROSS_NOTE,
                   tracks=tracks)
        left.set_ylabel("test accuracy, median across datasets")
        right.set_ylabel("PGR, median across datasets")
        n = max(r["n_datasets"] for r in summary_rows)
        fig.suptitle(f"weak-to-strong scaling across {n} datasets, loss {loss}: one line per weak "
                     "supervisor, the median across datasets\n(as the paper summarises its NLP tasks: "
                     "Burns et al. 2023, figure 3)", fontsize=10)
        fewer = [r for r in summary_rows if r["kind"] == "transfer" and r["loss"] == loss
                 and r["weak"] != r["strong"] and r["n_datasets_pgr"] < r["n_datasets"]]
        if fewer:  # a median over fewer datasets must say so
            right.text(0.02, 0.08, f"{len(fewer)} point(s) rest on fewer datasets: PGR undefined "
                       "(ceiling <= weak) on the others", transform=right.transAxes, fontsize=6,
                       color="grey")
        save(fig, f"summary-{loss}.png")
    if pooled_rows:
        fig, ax = plt.subplots(figsize=(6.4, 6.2))
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axhline(1, color="black", linewidth=0.8, linestyle="--")
        styles = {"xent": ("tab:blue", "o"), "logconf": ("tab:red", "s")}
        pooled_losses = list(dict.fromkeys(r["loss"] for r in pooled_rows))
        plotted = []
        for i, loss in enumerate(pooled_losses):
            line = sorted((r for r in pooled_rows if r["loss"] == loss), key=lambda r: r["params"])
            color, marker = styles.get(loss.split("-")[0], (f"C{i + 2}", "^"))
            xs = _dodge([r["params"] for r in line], i, len(pooled_losses))
            ax.errorbar(xs, [r["median_pgr"] for r in line],
                        yerr=_err(line, "median_pgr"), color=color, marker=marker, capsize=3,
                        label=f"{loss} (median of {line[0]['n_tasks']} tasks)")
            plotted += [(x, r["median_pgr"], r["median_pgr_lo"], r["median_pgr_hi"], color)
                        for x, r in zip(xs, line)]
        _log_axis(ax, {r["params"]: f"{names.get(r['strong'], r['strong'])} {size_label(r['params'])}"
                       for r in pooled_rows})
        ax.set_xlabel("strong student parameters (log scale)")
        _pgr_axis(ax, plotted)
        ax.set_ylabel("median PGR, pooled over supervisors")
        ax.set_title("median PGR pooled over supervisors, by loss and student size\n(not the paper's "
                     "summary, which keeps one line per supervisor: summary-<loss>.png)", fontsize=9)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.42),
                  title="tasks: datasets x weak supervisors, pooled; bars: 95% bootstrap over seeds and "
                        "test examples", title_fontsize=7)
        save(fig, POOLED_FIGURE)
    return figs


def gain_misfit(rows: list[dict]):
    """Gain over the supervisor (transfer - weak accuracy) against misfit (the student's
    disagreement with its supervisor on test), one point per transfer run (per seed), one colour
    per loss, with the line gain = misfit, the most an accuracy gain can be (diagnostics.py). None
    when no run carries the diagnostics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in rows if r.get("seed") not in ("mean", "median") and r.get("misfit") is not None]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for i, loss in enumerate(dict.fromkeys(r["loss"] for r in runs)):
        mine = [r for r in runs if r["loss"] == loss]
        ax.scatter([r["misfit"] for r in mine], [r["gain_over_weak"] for r in mine], color=f"C{i}",
                   label=f"{loss} ({len(mine)} runs)", s=28, alpha=0.8)
    top = max(max(r["misfit"] for r in runs), 0.01)
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=0.8, label="gain = misfit")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("misfit: disagreement with the weak supervisor on test")
    ax.set_ylabel("gain: transfer accuracy - weak accuracy")
    ax.set_title("weak-to-strong gain against misfit, one point per run and seed", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def draw_gain_misfit(rows: list[dict], out_dir: Path) -> list[Path]:
    """gain-vs-misfit.png in out_dir (nothing when no run carries the diagnostics)."""
    import matplotlib.pyplot as plt

    fig = gain_misfit(rows)
    if fig is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_dir / "gain-vs-misfit.png", dpi=110)
    plt.close(fig)
    return [out_dir / "gain-vs-misfit.png"]
