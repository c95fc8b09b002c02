"""A sweep's results: tables (accuracy of every run, PGR of every pair and loss, means and 95%
intervals over seeds) and scaling plots in the style of the weak-to-strong paper's: test accuracy
against the strong model's size, one line per weak model plus the ceiling (each model trained on
ground truth), and PGR against the strong model's size. PNG files always; the same curves in the
W&B workspace when tracking.wandb is on.

PGR has one definition throughout (metrics.PGR_DEFINITION), stated on every table and figure.

Written to results/<name>/: summary.json / summary.csv (transfer rows, as `w2s summary` writes
them, with a dataset column), gt_summary.json / gt_summary.csv, paper_pgr and cross_dataset
(.json, .csv: w2s_scale/aggregate.py), summary.txt (the tables as printed),
scaling_points.{txt,csv,json}, scaling_summary.{csv,json} (the paper's cross-dataset summary) and
scaling_pooled_median_pgr.{csv,json} (pooled over supervisors): the curve points with 95%
bootstrap intervals (figures.py); figures/<dataset>-<loss>.png, figures/grid-<loss>.png,
figures/summary-<loss>.png, figures/pooled-median-pgr.png, figures/gain-vs-misfit.png; and with
--wandb-report wandb_report.json (wandb_report.py).
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

from w2s_scale import figures, tracking
from w2s_scale import wandb_report as keys
from w2s_scale.config import SweepConfig, TrackingConfig
from w2s_scale.figures import draw_gain_misfit, format_points, write_table
from w2s_scale.metrics import PGR_DEFINITION, mean_interval
from w2s_scale.models import load_hf_config
from w2s_scale.report import (aggregate_tables, format_diagnostics, seed_text, summarize,
                              unfinished_runs, write_rows)
from w2s_scale.files import atomic_write
from w2s_scale.results import RunDir
from w2s_scale.sweep import SweepRun, disk_state, sweep_dir
from w2s_scale.tracking import check_wandb
from w2s_scale.wandb_report import save_report


# --- tables --------------------------------------------------------------------------------------

def gt_rows(runs: list[SweepRun]) -> list[dict]:
    """One row per finished ground-truth run, then one per (dataset, model) over seeds."""
    rows = []
    for run in (r for r in runs if r.plan.kind == "gt" and not r.plan.seed_offset
                and disk_state(r) == "done"):
        metrics = RunDir(run.plan.dir, run.plan.hash).read_json("metrics.json")
        rows.append({"dataset": run.dataset, "model": run.plan.model.short_name, "seed": run.seed,
                     "accuracy": metrics["accuracy"], "auc": metrics.get("auc"),
                     "n_test": metrics.get("n_test")})
    groups = defaultdict(list)
    for row in rows:
        groups[(row["dataset"], row["model"])].append(row)
    for (dataset, model), members in groups.items():
        acc = mean_interval([m["accuracy"] for m in members])
        auc = mean_interval([m["auc"] for m in members])
        rows.append({"dataset": dataset, "model": model, "seed": "mean", "accuracy": acc["mean"],
                     "accuracy_ci95": acc["ci95"], "auc": auc["mean"], "n_seeds": len(members)})
    return rows


def transfer_rows(runs: list[SweepRun]) -> list[dict]:
    """report.summarize per dataset (per-seed rows, then rows over the seeds, each PGR with its
    bootstrap interval), with the dataset and an interval on transfer accuracy added."""
    rows = []
    # only runs finished with this sweep's settings (a DONE marker of another hash is another
    # run's result); a transfer row needs its teacher's and its ceiling's runs too
    done = {r.plan.dir for r in runs if disk_state(r) == "done"}
    for dataset in dict.fromkeys(r.dataset for r in runs):
        part = summarize([r.plan for r in runs if r.dataset == dataset and r.plan.dir in done
                          and (r.plan.weak is None or r.plan.weak.dir in done)])
        per_seed = defaultdict(list)
        for row in part:
            if row["seed"] != "mean":
                per_seed[(row["weak"], row["strong"], row["loss"])].append(row)
        for row in part:
            row = {"dataset": dataset, **row}
            if row["seed"] == "mean":
                members = per_seed[(row["weak"], row["strong"], row["loss"])]
                row["transfer_acc_ci95"] = mean_interval([m["transfer_acc"] for m in members])["ci95"]
            rows.append(row)
    return rows


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pm(mean, ci) -> str:
    return _num(mean) if ci is None else f"{mean:.3f} +- {ci:.3f}"


def _table(header: list[str], lines: list[list[str]]) -> str:
    lines = [header] + lines
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def format_tables(gt: list[dict], transfer: list[dict]) -> str:
    """Every run, then the means over seeds (accuracy: +- half-width of the 95% t-interval; PGR
    by its definition with its 95% two-level bootstrap interval, one seed's: over test
    examples)."""
    gt_lines = [[r["dataset"], r["model"], str(r["seed"]),
                 _pm(r["accuracy"], r.get("accuracy_ci95")) if r["seed"] == "mean" else _num(r["accuracy"]),
                 _num(r.get("auc"))] for r in gt]
    out = ["ground truth (ceiling) runs: test accuracy",
           _table(["dataset", "model", "seed", "accuracy", "auc"], gt_lines) if gt_lines else "  (none finished)"]
    tr_lines = []
    for r in transfer:
        mean = r["seed"] == "mean"
        if r["pgr"] is None:
            pgr = "undefined (ceiling <= weak)"
        else:
            pgr = _num(r["pgr"]) + ("" if r["pgr_lo"] is None else f" [{r['pgr_lo']:.2f}, {r['pgr_hi']:.2f}]")
        tr_lines.append([r["dataset"], r["weak"], r["strong"], r["loss"], seed_text(r),
                         _num(r["weak_acc"]), _num(r["ceiling_acc"]),
                         _pm(r["transfer_acc"], r.get("transfer_acc_ci95")) if mean else _num(r["transfer_acc"]),
                         pgr, _num(r.get("pgr_auc"))])
    out += ["", "transfer runs: test accuracy and PGR (a seed's row: that seed's runs; a mean row: "
            "its seeds; 95%: bootstrap over seeds, then test examples), AUC-PGR the same on AUC. "
            + PGR_DEFINITION,
            _table(["dataset", "weak", "strong", "loss", "seed", "weak", "ceiling", "transfer",
                    "PGR [95%]", "AUC-PGR"],
                   tr_lines) if tr_lines else "  (none finished)"]
    return "\n".join(out)


# --- plots ---------------------------------------------------------------------------------------

def parameter_counts(cfg: SweepConfig) -> dict[str, Optional[int]]:
    """Parameters of each model's backbone, counted on the meta device (nothing is loaded or
    allocated); None where the architecture cannot be read."""
    counts: dict[str, Optional[int]] = {}
    try:
        import torch
        from transformers import AutoModel

    except ImportError:
        return {m.short_name: None for m in cfg.models}
    for model in cfg.models:
        try:
            hf_config = load_hf_config(model.model_config_only())
            with torch.device("meta"):
                backbone = AutoModel.from_config(hf_config)
            counts[model.short_name] = sum(p.numel() for p in backbone.parameters())
        except Exception:  # noqa: BLE001 - a plot axis is not worth failing the report for
            counts[model.short_name] = None
    return counts


def figure_data(cfg: SweepConfig, runs: list[SweepRun]) -> tuple[list[dict], list[dict], list[dict]]:
    """The curve points, the paper's cross-dataset summary and the median pooled over
    supervisors (figures.tables) of what has finished."""
    return figures.tables(figures.load_results(runs), parameter_counts(cfg))


def model_names(cfg: SweepConfig) -> dict[str, str]:
    """Each model's name in the figures' legends and point labels: ModelConfig.display_name, the
    one place that naming is decided (a frozen-feature linear probe is named as one)."""
    return {m.short_name: m.display_name for m in cfg.models}


def model_tracks(cfg: SweepConfig) -> dict[str, str]:
    """Each model's training kind (ModelConfig.training_kind): the figures draw each as a line."""
    return {m.short_name: m.training_kind for m in cfg.models}


def draw_figures(points: list[dict], summary_rows: list[dict], pooled_rows: list[dict], out_dir: Path,
                 names: Optional[dict[str, str]] = None,
                 tracks: Optional[dict[str, str]] = None) -> list[Path]:
    """The paper-style figures (figures.py); none, with the reason printed, where a model's
    parameter count (the x axis) cannot be read."""
    unknown = sorted({r["strong"] for r in points if r["params"] is None})
    if unknown:
        print(f"[w2s] no figures: the parameter count of {', '.join(unknown)} cannot be read "
              f"(its config does not load here)", flush=True)
        return []
    return figures.draw(points, summary_rows, pooled_rows, out_dir / "figures", names, tracks)


def log_wandb(cfg: SweepConfig, gt: list[dict], transfer: list[dict], points: list[dict],
              summary_rows: list[dict], pooled_rows: list[dict], pngs: list[Path],
              out_dir: Path) -> dict[str, str]:
    """The tables, the scaling curves as W&B line plots (drawn from the data, so they can be
    restyled in the workspace) and the PNGs, in one run of job type `report`. Returns the keys
    logged (key -> kind), which the W&B Report (wandb_report.py) refers to."""
    import wandb

    run = wandb.init(project=cfg.tracking.project, entity=cfg.tracking.entity,
                     mode=check_wandb(cfg.tracking, out_dir),
                     group=cfg.name, name=f"{cfg.name}-scaling", job_type="report",
                     dir=str(out_dir), config=cfg.model_dump(mode="json"), reinit="finish_previous")
    logged = {}
    tables = {"gt_table": gt, "transfer_table": transfer, keys.POINTS_TABLE: points,
              keys.SUMMARY_TABLE: summary_rows, keys.POOLED_TABLE: pooled_rows}
    for name, rows in tables.items():
        if rows:
            columns = list(dict.fromkeys(k for r in rows for k in r))
            logged[name] = wandb.Table(columns=columns, allow_mixed_types=True,  # seed: 0, 1, "mean"
                                       data=[[_plain(r.get(c)) for c in columns] for r in rows])
    for (dataset, loss, metric), lines in keys.curves(points).items():
        labels = list(lines)
        logged[keys.curve_key(dataset, loss, metric)] = wandb.plot.line_series(
            xs=[[x for x, _ in lines[k]] for k in labels], ys=[[y for _, y in lines[k]] for k in labels],
            keys=labels, title=f"{dataset}, {loss}: {metric}", xname="strong model parameters")
    for png in pngs:
        logged[keys.image_key(png)] = wandb.Image(str(png))
    run.log(logged)
    run.finish()
    return {k: type(v).__name__ for k, v in logged.items()}


def record_pgr(runs: list[SweepRun], transfer: list[dict], tracking_cfg: Optional[TrackingConfig] = None) -> int:
    """Each transfer run's PGR, known only once its ceiling run has finished, written into the
    run's own folder: pgr.json and a `pgr` event in its log.jsonl, and, with W&B online, into
    the summary of the run's own W&B run (resumed under the id kept in its folder), so its run
    page shows it; offline runs are not reopened (tracking.update_summary). Only what changed is written, so repeated reports add nothing. Returns the number
    of runs updated."""
    by_key = {(r.dataset, r.seed, r.plan.weak.model.short_name, r.plan.model.short_name, r.plan.variant): r
              for r in runs if r.plan.kind in ("transfer", "method")}
    updated = 0
    for row in (r for r in transfer if r["seed"] != "mean"):
        run = by_key.get((row["dataset"], row["seed"], row["weak"], row["strong"], row["loss"]))
        if run is None:
            continue
        values = {"pgr": row["pgr"], "pgr_lo": row["pgr_lo"], "pgr_hi": row["pgr_hi"],
                  "weak_model": row["weak"], "weak_accuracy": row["weak_acc"],
                  "ceiling_accuracy": row["ceiling_acc"], "transfer_accuracy": row["transfer_acc"]}
        path = run.plan.dir / "pgr.json"
        if path.exists() and json.loads(path.read_text()) == values:
            continue
        atomic_write(path, json.dumps(values, indent=2) + "\n")
        with (run.plan.dir / "log.jsonl").open("a") as log:
            log.write(json.dumps({"time": round(time.time(), 3), "event": "pgr", **values}) + "\n")
        id_file = run.plan.dir / tracking.RUN_ID_FILE
        if tracking_cfg is not None and tracking_cfg.wandb != "off" and id_file.exists():
            tracking.update_summary(tracking_cfg, id_file.read_text().strip(), values, run.plan.dir)
        updated += 1
    return updated


def _plain(value):
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)


def report(cfg: SweepConfig, runs: list[SweepRun], plots: bool = True, wandb_report: bool = False) -> dict:
    """Tables (printed and saved) and plots of what has finished; W&B if tracking.wandb is on."""
    out_dir = sweep_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    gt, transfer = gt_rows(runs), transfer_rows(runs)
    text = format_tables(gt, transfer)
    if format_diagnostics(transfer):
        text += "\n\n" + format_diagnostics(transfer)
    if transfer:
        text += "\n\n" + aggregate_tables(transfer, out_dir, [m.short_name for m in cfg.models])
    print(text, flush=True)
    lacking = unfinished_runs(r.plan for r in runs)
    if lacking:
        print(lacking, flush=True)
    # settings with no finished run write nothing over the tables of those that did finish
    if transfer:
        write_rows(out_dir / "summary", transfer)
    if gt:
        write_rows(out_dir / "gt_summary", gt)
    if gt or transfer:
        atomic_write(out_dir / "summary.txt", text + "\n")
    else:
        print(f"[w2s] no finished runs to report; the tables in {out_dir} are left as they were",
              flush=True)
    record_pgr(runs, transfer, cfg.tracking)
    pngs, points, summary_rows, pooled_rows = [], [], [], []
    if gt:
        points, summary_rows, pooled_rows = figure_data(cfg, runs)
        write_table(points, summary_rows, pooled_rows, out_dir)
        if plots:
            try:
                pngs = draw_figures(points, summary_rows, pooled_rows, out_dir, model_names(cfg),
                                    model_tracks(cfg))
                pngs += draw_gain_misfit(transfer, out_dir / "figures")  # over the whole sweep
            except ImportError:
                print("[w2s] no plots: matplotlib is missing (pip install 'w2s-scale[plot]')", flush=True)
    logged = {}
    if cfg.tracking.wandb != "off":
        logged = log_wandb(cfg, gt, transfer, points, summary_rows, pooled_rows, pngs, out_dir)
    if wandb_report:
        save_report(cfg, runs, points, summary_rows, pooled_rows, pngs, logged, out_dir)
    if points:
        print(format_points(points, summary_rows, pooled_rows), flush=True)
    print(f"[w2s] summary written to {out_dir}/summary.{{txt,csv,json}} and gt_summary.{{csv,json}}; "
          f"curve points with 95% bootstrap intervals in {out_dir}/scaling_points.{{txt,csv,json}}"
          + (f"; figures in {out_dir / 'figures'}" if pngs else ""), flush=True)
    return {"gt": gt, "transfer": transfer, "plots": pngs, "points": points, "summary": summary_rows,
            "pooled": pooled_rows}
