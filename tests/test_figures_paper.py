"""The paper's cross-dataset summary (Burns et al. 2023, figure 3: one line per weak supervisor,
the median across tasks) against a median computed here independently, on synthetic run results
(figures.RunResult, no files); the pooled median under its own name; the sweep's labels in the
legends. Nothing here asserts a scientific outcome: the accuracies are made up."""
from __future__ import annotations

import statistics

import numpy as np
import pytest

from w2s_scale import figures
from w2s_scale.metrics import MIN_GAP, PGR_DEFINITION

N_TEST = 200
SEEDS = (0, 1, 2)
DATASETS = ("d1", "d2", "d3")
SIZES = {"w-small": 10_000, "w-large": 40_000, "s-mid": 1_000_000, "s-big": 20_000_000}
WEAK, STRONG = ("w-small", "w-large"), ("s-mid", "s-big")


def _accuracy(dataset: str, seed: int, model: str, weak=None) -> float:
    """Made-up accuracies that differ by dataset and seed; on d3 s-mid's ceiling is below w-large,
    so that pair's PGR is undefined there (the median over datasets must leave it out)."""
    d, base = DATASETS.index(dataset), {"w-small": 0.60, "w-large": 0.66, "s-mid": 0.72, "s-big": 0.80}
    if weak is None:
        value = base[model] + 0.02 * d + 0.01 * seed
        if dataset == "d3" and model == "s-mid":
            value = base["w-large"] + 0.02 * d - 0.03
        return value
    return (base[weak] + base[model]) / 2 + 0.03 * ((d * 7 + seed * 3) % 4) / 3


def _correct(accuracy: float, rng) -> dict[str, bool]:
    right = set(rng.choice(N_TEST, size=round(accuracy * N_TEST), replace=False).tolist())
    return {f"t{i}": i in right for i in range(N_TEST)}


@pytest.fixture(scope="module")
def results() -> list[figures.RunResult]:
    rng = np.random.default_rng(0)
    out = []
    for dataset in DATASETS:
        for seed in SEEDS:
            for model in WEAK + STRONG:
                out.append(figures.RunResult(dataset, seed, model, None, None,
                                             _correct(_accuracy(dataset, seed, model), rng)))
            for weak in WEAK:
                for strong in STRONG:
                    out.append(figures.RunResult(dataset, seed, strong, weak, "xent",
                                                 _correct(_accuracy(dataset, seed, strong, weak), rng)))
    return out


def _by_hand(results, dataset: str, weak: str, strong: str):
    """(transfer accuracy, PGR) of one dataset's point, written out: each run's accuracy from its
    correct flags, the weak and ceiling accuracies averaged over seeds, each transfer run against
    those means, the median over the runs."""
    def acc(model, of_weak, seed):
        [run] = [r for r in results if (r.dataset, r.model, r.weak, r.seed) == (dataset, model, of_weak, seed)]
        return sum(run.correct.values()) / len(run.correct)

    w = statistics.mean(acc(weak, None, s) for s in SEEDS)
    c = statistics.mean(acc(strong, None, s) for s in SEEDS)
    t = [acc(strong, weak, s) for s in SEEDS]
    pgr = statistics.median((x - w) / (c - w) for x in t) if c - w > MIN_GAP else None
    return statistics.mean(t), pgr


def test_summary_is_the_median_across_datasets_per_supervisor(results):
    _, summary, _ = figures.tables(results, SIZES, n_boot=200)
    transfer = {(r["weak"], r["strong"]): r for r in summary if r["kind"] == "transfer"}
    assert set(transfer) == {(w, s) for w in WEAK for s in STRONG}  # one line per supervisor
    undefined_somewhere = 0
    for (weak, strong), row in transfer.items():
        per_dataset = [_by_hand(results, d, weak, strong) for d in DATASETS]
        defined = [p for _, p in per_dataset if p is not None]
        undefined_somewhere += len(defined) < len(DATASETS)
        assert row["dataset"] == figures.ACROSS and row["loss"] == "xent"
        assert row["accuracy"] == pytest.approx(statistics.median(a for a, _ in per_dataset))
        assert row["pgr"] == pytest.approx(statistics.median(defined))
        assert (row["n_datasets"], row["n_datasets_pgr"]) == (3, len(defined))
        assert row["params"] == SIZES[strong] and row["weak_params"] == SIZES[weak]
        assert row["accuracy_lo"] <= row["accuracy"] <= row["accuracy_hi"]
    assert undefined_somewhere == 1  # w-large -> s-mid on d3: left out of its median, and counted
    # the ceiling and each supervisor alone: medians across datasets of their seed means
    for kind, models in (("ceiling", STRONG), ("weak", WEAK)):
        for model in models:
            [row] = [r for r in summary if (r["kind"], r["strong"]) == (kind, model)]
            runs = [r for r in results if r.model == model and r.weak is None]
            means = [statistics.mean(sum(r.correct.values()) / N_TEST for r in runs if r.dataset == d)
                     for d in DATASETS]
            assert row["accuracy"] == pytest.approx(statistics.median(means))


def test_summary_figure_panels_lines_and_labels(results):
    import matplotlib.pyplot as plt

    points, summary, pooled = figures.tables(results, SIZES, n_boot=200)
    names = {"s-big": "S big (linear probe)", "w-large": "W large"}  # labels as a sweep gives them
    figs = figures.build(points, summary, pooled, names)
    assert sorted(figs) == sorted([f"{d}-xent.png" for d in DATASETS] + ["grid-xent.png", "summary-xent.png",
                                                                        figures.POOLED_FIGURE])
    fig = figs["summary-xent.png"]
    acc_ax, pgr_ax = fig.axes
    assert acc_ax.get_title() == f"{figures.ACROSS}, xent: test accuracy"
    assert pgr_ax.get_title() == f"{figures.ACROSS}, xent: PGR (1 = ceiling, 0 = weak)"
    assert acc_ax.get_ylabel() == "test accuracy, median across datasets"
    assert pgr_ax.get_ylabel() == "PGR, median across datasets"
    assert pgr_ax.get_xlabel() == "parameters of the strong student (log scale)"
    assert acc_ax.get_xscale() == pgr_ax.get_xscale() == "log"
    assert "Burns et al. 2023, figure 3" in fig._suptitle.get_text()
    assert "one line per weak supervisor" in fig._suptitle.get_text()
    # the PGR panel: one line per supervisor, named by its label, at the summary's values
    handles, labels = pgr_ax.get_legend_handles_labels()
    assert labels == ["supervised by w-small (10K)", "supervised by W large (40K)"]
    for weak, handle in zip(WEAK, handles):
        line = sorted((r for r in summary if r["kind"] == "transfer" and r["weak"] == weak),
                      key=lambda r: r["params"])
        assert list(handle.lines[0].get_ydata()) == pytest.approx([r["pgr"] for r in line])
    # the accuracy panel names each supervisor and student by its label
    acc_labels = acc_ax.get_legend_handles_labels()[1]
    assert any("W large alone" in t for t in acc_labels)
    assert "S big (linear probe)" in [t.get_text() for t in acc_ax.texts]
    # every figure states the one definition
    for name, f in figs.items():
        notes = [t.get_text().replace("\n", " ") for t in f.texts if t.get_gid() == figures.DEFINITION_GID]
        assert notes == [PGR_DEFINITION], name
    plt.close("all")


def test_a_frozen_probe_and_a_fine_tuned_student_are_two_lines(results):
    """Students of two training kinds (ModelConfig.training_kind) never share a line: each weak
    supervisor gets a line per kind, the ceiling too, each line holding its own kind's points."""
    import matplotlib.pyplot as plt

    points, summary, pooled = figures.tables(results, SIZES, n_boot=200)
    students = sorted({r["strong"] for r in points if r["kind"] == "ceiling"}, key=SIZES.get)
    tracks = {students[0]: "frozen probe", students[-1]: "fine-tuned"}
    fig = figures.build(points, summary, pooled, {}, tracks)["summary-xent.png"]
    acc_ax, pgr_ax = fig.axes
    handles, labels = pgr_ax.get_legend_handles_labels()
    assert len(labels) == 2 * len(WEAK)
    assert sum("frozen probe students" in t for t in labels) == len(WEAK)
    for handle, label in zip(handles, labels):
        kind = "frozen probe" if "frozen probe" in label else "fine-tuned"
        xs = handle.lines[0].get_xdata()
        assert len(xs) == sum(tracks.get(s, "fine-tuned") == kind for s in students)
        assert handle.lines[0].get_linestyle() == figures.TRACK_STYLES[kind][0]
    ceiling_labels = [t for t in acc_ax.get_legend_handles_labels()[1] if t.startswith("strong ceiling")]
    assert ceiling_labels == ["strong ceiling (trained on ground truth, fine-tuned)",
                              "strong ceiling (trained on ground truth, frozen probe)"]
    plt.close("all")


def test_pooled_median_has_its_own_name_and_is_never_called_the_papers(results):
    import matplotlib.pyplot as plt

    points, summary, pooled = figures.tables(results, SIZES, n_boot=200)
    # pooled: per loss and student, the median over every (dataset, supervisor) task
    for row in pooled:
        tasks = [_by_hand(results, d, w, row["strong"])[1] for d in DATASETS for w in WEAK]
        defined = [p for p in tasks if p is not None]
        assert row["median_pgr"] == pytest.approx(statistics.median(defined))
        assert row["n_tasks"] == len(defined)
    figs = figures.build(points, summary, pooled)
    [ax] = figs[figures.POOLED_FIGURE].axes
    assert "pooled over supervisors" in ax.get_title() and "not the paper's" in ax.get_title()
    assert "pooled" in ax.get_ylabel()
    assert "pooled" in ax.get_legend().get_title().get_text()
    assert figures.POOLED_FIGURE.startswith("pooled") and "pooled" in figures.TABLE_STEMS[2]
    text = figures.format_points(points, summary, pooled)
    assert figures.POOLED_CAPTION in text and "not the paper's summary" in figures.POOLED_CAPTION
    plt.close("all")
