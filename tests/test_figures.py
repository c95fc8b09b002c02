"""Scaling figures, their intervals, and the W&B Report definition, offline and fast: finished
runs are written as files (test predictions right exactly where a random draw says), the models
are the tiny real-architecture folders of conftest (so parameter counts are real)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config, write_config  # noqa: E402

from w2s_scale import figures, intervals  # noqa: E402
from w2s_scale.metrics import PGR_DEFINITION  # noqa: E402
from w2s_scale.loading import load_sweep  # noqa: E402
from w2s_scale.sweep import plan_sweep  # noqa: E402


# --- intervals ----------------------------------------------------------------------------------

def test_accuracy_intervals_stay_within_0_and_1():
    rng = np.random.default_rng(0)
    near_one = [(rng.random(200) < 0.99).astype(float) for _ in range(3)]
    est = intervals.accuracy(near_one, n_boot=300)
    assert 0.0 <= est.lo <= est.value <= est.hi <= 1.0 and est.n_seeds == 3
    perfect = intervals.accuracy([np.ones(50)] * 2, n_boot=100)
    assert perfect.lo == perfect.hi == perfect.value == 1.0
    lo, hi = intervals.wilson(50, 50)
    assert hi == pytest.approx(1.0) and hi <= 1.0 and 0.9 < lo < 1.0
    assert intervals.wilson(0, 10)[0] == 0.0


def test_pgr_interval_covers_seeds_and_examples_and_says_undefined():
    rng = np.random.default_rng(1)
    triples = [((rng.random(400) < 0.6), (rng.random(400) < 0.9), (rng.random(400) < 0.75)) for _ in range(3)]
    est = intervals.pgr(triples, n_boot=400)
    assert est.lo < est.value < est.hi and est.value == pytest.approx(0.5, abs=0.15)
    # the point is the one definition: the median over seeds against the seed means
    w, c, t = ([np.mean(x[i]) for x in triples] for i in range(3))
    assert est.value == pytest.approx(float(np.median([(x - np.mean(w)) / (np.mean(c) - np.mean(w)) for x in t])))
    one_seed = intervals.pgr(triples[:1], n_boot=400)
    assert one_seed.n_seeds == 1 and one_seed.lo is not None
    same = np.ones(100)
    assert intervals.pgr([(same, same, same)], n_boot=50).value is None  # ceiling == weak
    with pytest.raises(ValueError, match="one length"):
        intervals.pgr([(np.ones(3), np.ones(4), np.ones(3))])


# --- a finished sweep on disk -----------------------------------------------------------------------

ACC = {"gpt2-weak": 0.6, "llama": 0.7, "gpt2-strong": 0.75, "qwen2": 0.85}


@pytest.fixture
def finished_sweep(tmp_path, tiny_models, tiny_data):
    """Two weak supervisors, two strong students, two datasets, two seeds, two losses: every
    run finished with synthetic predictions."""
    base = tiny_config(tmp_path / "results", tiny_models, tiny_data)
    data = dict(base["data"])
    cfg = {"name": "ladder", "results_dir": str(tmp_path / "results"), "train": base["train"],
           "datasets": [data, {**data, "dataset": "csv", "path": str(tiny_data.with_suffix(".csv"))}],
           "models": [{"name": str(tiny_models[n]), "label": n, "role": role}
                      for n, role in (("gpt2-weak", "weak"), ("llama", "weak"),
                                      ("gpt2-strong", "strong"), ("qwen2", "strong"))],
           "seeds": [0, 1], "losses": ["xent", "logconf"], "self_transfer": False,
           "tracking": {"wandb": "off", "progress": False, "project": "w2s-test"}}
    sweep = load_sweep(write_config(tmp_path / "sweep.yaml", cfg))
    runs = plan_sweep(sweep)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    for run in runs:
        model = run.plan.model.short_name
        acc = ACC[model] if run.plan.kind == "gt" else (ACC[run.plan.weak.model.short_name] + ACC[model]) / 2
        correct = rng.random(300) < acc
        run.plan.dir.mkdir(parents=True, exist_ok=True)
        p1 = np.where(correct, labels, 1 - labels) * 0.8 + 0.1
        (run.plan.dir / "test_predictions.jsonl").write_text("".join(
            json.dumps({"id": f"t{i}", "p1": float(p), "label": int(y)}) + "\n"
            for i, (p, y) in enumerate(zip(p1, labels))))
        (run.plan.dir / "metrics.json").write_text(json.dumps({"accuracy": float(correct.mean()), "auc": 0.5,
                                                               "n_test": 300}))
        (run.plan.dir / "DONE").write_text(json.dumps({"hash": run.plan.hash}))
    return sweep, runs


def test_roles_plan_only_weak_to_strong_pairs(finished_sweep):
    _, runs = finished_sweep
    pairs = {(r.plan.weak.model.short_name, r.plan.model.short_name) for r in runs if r.plan.kind == "transfer"}
    assert pairs == {(w, s) for w in ("gpt2-weak", "llama") for s in ("gpt2-strong", "qwen2")}
    assert sum(r.plan.kind == "gt" for r in runs) == 2 * 2 * 4


def test_figures_log_axis_intervals_within_bounds(finished_sweep):
    sweep, runs = finished_sweep
    from w2s_scale.scaling import figure_data, parameter_counts

    points, summary_rows, pooled_rows = figure_data(sweep, runs)
    sizes = parameter_counts(sweep)
    assert all(sizes.values()) and len(set(sizes.values())) == 4
    assert {r["kind"] for r in points} == {"weak", "ceiling", "transfer"}
    for r in points:
        assert 0.0 <= r["accuracy_lo"] <= r["accuracy"] <= r["accuracy_hi"] <= 1.0
        assert r["n_seeds"] == 2 and r["params"] == sizes[r["strong"]]
    transfer = [r for r in points if r["kind"] == "transfer"]
    assert len(transfer) == 2 * 2 * 2 * 2 and all(r["pgr_lo"] < r["pgr_hi"] for r in transfer)
    assert {(r["loss"], r["strong"]) for r in pooled_rows} == {(l, s) for l in ("xent", "logconf")
                                                               for s in ("gpt2-strong", "qwen2")}
    assert all(r["n_tasks"] == 4 for r in pooled_rows)  # 2 datasets x 2 weak supervisors
    # the paper's summary: every (loss, supervisor, student) over both datasets
    assert {(r["loss"], r["weak"], r["strong"]) for r in summary_rows if r["kind"] == "transfer"} == {
        (l, w, s) for l in ("xent", "logconf") for w in ("gpt2-weak", "llama") for s in ("gpt2-strong", "qwen2")}
    assert all(r["n_datasets"] == 2 and r["dataset"] == figures.ACROSS for r in summary_rows)

    figs = figures.build(points, summary_rows, pooled_rows)
    assert sorted(figs) == sorted(["jsonl-xent.png", "jsonl-logconf.png", "csv-xent.png", "csv-logconf.png",
                                   "grid-xent.png", "grid-logconf.png", "summary-xent.png",
                                   "summary-logconf.png", figures.POOLED_FIGURE])
    acc_ax, pgr_ax = figs["jsonl-xent.png"].axes
    for ax in (acc_ax, pgr_ax, *figs["grid-xent.png"].axes, *figs["summary-xent.png"].axes,
               *figs[figures.POOLED_FIGURE].axes):
        assert ax.get_xscale() == "log"
    # the accuracy panel: x positions are parameter counts, every plotted value and bar in [0, 1]
    xs = {round(x) for line in acc_ax.get_lines() for x in line.get_xdata()}
    assert sizes["gpt2-weak"] in xs and sizes["gpt2-strong"] in xs
    ys = [y for line in acc_ax.get_lines() for y in line.get_ydata()]
    assert ys and all(0.0 <= y <= 1.0 for y in ys)
    legend = acc_ax.get_legend()
    assert "2 seeds" in legend.get_title().get_text()
    labels = [t.get_text() for t in legend.get_texts()]
    assert any("ceiling" in t for t in labels) and any("llama" in t for t in labels)
    low, high = pgr_ax.get_ylim()
    assert low <= 0 and high >= 1  # PGR's scale points are always in view
    import matplotlib.pyplot as plt

    plt.close("all")


def test_pgr_axis_is_cut_at_plus_minus_2_and_says_so(finished_sweep):
    """A ceiling that barely beats its supervisor gives PGR -30 [-300, 5]: the axis stays at
    -2..2 (the other points stay readable), the point is an arrow head at the edge with its value,
    and a note says the axis was cut."""
    import matplotlib.pyplot as plt
    from w2s_scale.scaling import figure_data

    sweep, runs = finished_sweep
    points, summary_rows, pooled_rows = figure_data(sweep, runs)
    extreme = next(r for r in points if r["kind"] == "transfer" and r["dataset"] == "jsonl" and r["loss"] == "xent")
    extreme.update(pgr=-30.0, pgr_lo=-300.0, pgr_hi=5.0)
    pooled_rows[0].update(median_pgr=-30.0, median_pgr_lo=-300.0, median_pgr_hi=5.0)
    figs = figures.build(points, summary_rows, pooled_rows)
    for fig, ax in ((figs["jsonl-xent.png"], figs["jsonl-xent.png"].axes[1]),
                    (figs[figures.POOLED_FIGURE], figs[figures.POOLED_FIGURE].axes[0])):
        assert ax.get_ylim() == (figures.PGR_VIEW[0], figures.PGR_VIEW[1])
        texts = [t.get_text() for t in ax.texts]
        assert any("axis cut at PGR -2..2" in t for t in texts) and "-30.0" in texts
        edge = [line for line in ax.get_lines() if line.get_marker() == "v"]
        assert edge and edge[0].get_ydata()[0] == figures.PGR_VIEW[0]
    # a panel whose points and bars all lie within the view keeps its own limits and no note
    inside = [dict(r, pgr=0.5, pgr_lo=0.1, pgr_hi=0.9) if r["kind"] == "transfer" else r for r in points]
    pgr_ax = figures.build(inside, [], [])["csv-xent.png"].axes[1]
    assert not pgr_ax.texts and -2 < pgr_ax.get_ylim()[0] <= 0 and 1 <= pgr_ax.get_ylim()[1] < 2
    plt.close("all")


def test_report_writes_figures_table_and_pgr_into_runs(finished_sweep, capsys):
    sweep, runs = finished_sweep
    from w2s_scale.scaling import report

    out = report(sweep, runs)
    folder = Path(sweep.results_dir) / "ladder"
    assert {p.name for p in out["plots"]} >= {"jsonl-xent.png", "grid-logconf.png", "summary-xent.png",
                                              "summary-logconf.png", figures.POOLED_FIGURE}
    assert all(p.parent == folder / "figures" and p.stat().st_size > 10_000 for p in out["plots"])
    text = (folder / "scaling_points.txt").read_text()
    assert text.startswith(PGR_DEFINITION) and figures.POOLED_CAPTION in text and "[" in text
    for stem in figures.TABLE_STEMS:
        assert json.loads((folder / f"{stem}.json").read_text())
    assert "figures in" in capsys.readouterr().out
    run = next(r for r in runs if r.plan.kind == "transfer")
    pgr = json.loads((run.plan.dir / "pgr.json").read_text())
    assert pgr["weak_model"] == run.plan.weak.model.short_name and pgr["pgr"] is not None
    events = [json.loads(line)["event"] for line in (run.plan.dir / "log.jsonl").read_text().splitlines()]
    assert events == ["pgr"]
    report(sweep, runs, plots=False)  # a second report adds nothing to an unchanged run's log
    assert len((run.plan.dir / "log.jsonl").read_text().splitlines()) == 1


def test_wandb_report_definition_matches_logged_keys(finished_sweep, monkeypatch, capsys):
    """Built offline from a report run really logged (W&B offline mode): every panel's key must
    be one the report run logged, so renaming a logged metric breaks this test."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep, runs = finished_sweep
    sweep = sweep.model_copy(update={"tracking": sweep.tracking.model_copy(update={"wandb": "offline"})})
    from w2s_scale import wandb_report
    from w2s_scale.scaling import report

    report(sweep, runs, wandb_report=True)
    folder = Path(sweep.results_dir) / "ladder"
    offline = list((folder / "wandb").glob("offline-run-*"))
    assert offline
    media = offline[0] / "files" / "media"  # what W&B itself wrote for each logged key
    summary = {re.sub(r"_\d+_[0-9a-f]+$", "", str(f.relative_to(media / kind)).split(".")[0])
               for kind in ("table", "images") for f in (media / kind).rglob("*.*")}
    spec = json.loads((folder / "wandb_report.json").read_text())
    assert "python -m w2s_scale.wandb_report publish" in capsys.readouterr().out

    text = json.dumps(spec)
    table_keys = [f["value"] for f in _values(spec, "args") for f in f if f["name"] == "tableKey"]
    table_keys += [k["val"] for k in _values(spec, "key") if isinstance(k, dict) and "val" in k]  # table panels
    media_keys = [k for ks in _values(spec, "mediaKeys") for k in ks]
    # curves + points, summary and pooled tables; per dataset and loss + grid, summary per loss
    # and the pooled figure
    assert len(table_keys) == 2 * 2 * 2 + 3 and len(media_keys) == 4 + 2 + 2 + 1
    for key in table_keys + media_keys:
        assert key in summary, f"report panel reads {key!r}, not logged ({sorted(summary)[:8]} ...)"
    for dataset in ("jsonl", "csv"):
        assert f"Dataset {dataset}" in text
    assert {wandb_report.SUMMARY_TABLE, wandb_report.POINTS_TABLE, wandb_report.POOLED_TABLE} <= summary
    assert PGR_DEFINITION in text and "Pooled over supervisors" in text
    assert "Seeds: 0, 1" in text and "Losses: xent, logconf" in text and "Commit" in text
    runsets = list(_values(spec, "runSets"))
    assert {rs["name"] for sets in runsets for rs in sets} == {"sweep ladder"}  # one run set per sweep
    groups = [f["value"] for sets in runsets for rs in sets for f in rs["filters"]["filters"]]
    # the report run's group and the run pages' groups (Tracker: <sweep>/seed<k>)
    assert all(g == ["ladder", "ladder/seed0", "ladder/seed1"] for g in groups)
    # the published object round-trips from the file (what `publish` loads)
    loaded = wandb_report.load_report(folder / "wandb_report.json", entity="someone")
    assert loaded.title == "w2s-scale: ladder" and loaded.entity == "someone"
    # the run-page panels read keys the Tracker logs for a training record of the engine
    from w2s_scale.engine import train  # noqa: F401 - the keys below are its record's fields
    import inspect
    import w2s_scale.engine as engine

    source = inspect.getsource(engine.train)
    for key in wandb_report.RUN_PAGE_KEYS.values():
        event, field = key.split("/")
        assert f'"event": "{event}"' in source and f'"{field}"' in source


def _values(node, name):
    """Every value of a key `name` anywhere in a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == name:
                yield v
            yield from _values(v, name)
    elif isinstance(node, list):
        for v in node:
            yield from _values(v, name)


def test_report_puts_pgr_beside_each_transfer_run_and_never_reopens_its_offline_wandb_run(
        finished_sweep, monkeypatch):
    """The report job knows a run's PGR only once its ceiling exists. W&B cannot resume an offline
    run (a reopened one becomes a second offline-run-* folder that `wandb sync` does not merge),
    so offline the PGR goes to the run's pgr.json and log.jsonl (and the report run), and no new
    W&B folder appears for the finished run (online: tracking.update_summary adds it to the page)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep, runs = finished_sweep
    sweep = sweep.model_copy(update={"tracking": sweep.tracking.model_copy(update={"wandb": "offline"})})
    from w2s_scale.scaling import report
    from w2s_scale.tracking import RUN_ID_FILE

    run = next(r for r in runs if r.plan.kind == "transfer")
    (run.plan.dir / RUN_ID_FILE).write_text("pgrsummarytest01\n")
    report(sweep, runs, plots=False)
    assert not list((run.plan.dir / "wandb").glob("offline-run-*-pgrsummarytest01"))
    pgr = json.loads((run.plan.dir / "pgr.json").read_text())
    events = [json.loads(line) for line in (run.plan.dir / "log.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "pgr" and e["pgr"] == pgr["pgr"] for e in events)
    other = next(r for r in runs if r.plan.kind == "transfer" and r is not run)
    assert not (other.plan.dir / "wandb").exists()  # runs without a W&B run get none made for them


def _definition(fig) -> str:
    """The footnote stating the PGR definition, unwrapped; '' where the figure has none."""
    notes = [t.get_text().replace("\n", " ") for t in fig.texts if t.get_gid() == figures.DEFINITION_GID]
    assert len(notes) <= 1
    return notes[0] if notes else ""


def test_every_figure_and_table_states_the_one_pgr_definition(finished_sweep):
    """One PGR definition, stated on every figure and table that shows a PGR; and a point's PGR
    and interval read the same in the report's tables (report.summarize) and its figures."""
    import matplotlib.pyplot as plt
    from w2s_scale.aggregate import format_cross_dataset, format_paper_pgr, cross_dataset, paper_pgr
    from w2s_scale.report import format_table
    from w2s_scale.scaling import figure_data, format_tables, gt_rows, transfer_rows

    sweep, runs = finished_sweep
    points, summary_rows, pooled_rows = figure_data(sweep, runs)
    figs = figures.build(points, summary_rows, pooled_rows)
    for name, fig in figs.items():
        assert _definition(fig) == PGR_DEFINITION, name
    plt.close("all")
    transfer = transfer_rows(runs)
    for text in (figures.format_points(points, summary_rows, pooled_rows), format_table(transfer),
                 format_tables(gt_rows(runs), transfer), format_paper_pgr(paper_pgr(transfer)),
                 format_cross_dataset(cross_dataset(transfer))):
        assert PGR_DEFINITION in text
    means = {(r["dataset"], r["loss"], r["weak"], r["strong"]): r for r in transfer if r["seed"] == "mean"}
    checked = 0
    for r in (r for r in points if r["kind"] == "transfer"):
        table = means[(r["dataset"], r["loss"], r["weak"], r["strong"])]
        assert (table["pgr"], table["pgr_lo"], table["pgr_hi"]) == pytest.approx((r["pgr"], r["pgr_lo"], r["pgr_hi"]))
        checked += 1
    assert checked == 16


def test_figures_name_each_model_as_the_sweep_does(finished_sweep):
    """Legends, point names and the pooled figure's ticks use ModelConfig.display_name (a
    frozen-feature probe in the ladder is named as one), not the folder-safe short name."""
    import matplotlib.pyplot as plt
    from w2s_scale.scaling import figure_data, model_names

    sweep, runs = finished_sweep
    models = [m.model_copy(update={"linear_probe": True}) if m.short_name == "qwen2" else m
              for m in sweep.models]
    names = model_names(sweep.model_copy(update={"models": models}))
    probe = next(m for m in models if m.short_name == "qwen2").display_name
    assert names["qwen2"] == probe and names["llama"] == "llama"
    points, summary_rows, pooled_rows = figure_data(sweep, runs)
    figs = figures.build(points, summary_rows, pooled_rows, names)
    for name in ("jsonl-xent.png", "summary-xent.png"):
        assert probe in [t.get_text() for t in figs[name].axes[0].texts]  # the ceiling's point
    ticks = [t.get_text() for t in figs[figures.POOLED_FIGURE].axes[0].get_xticklabels()]
    assert any(t.startswith(probe) for t in ticks)
    plt.close("all")
