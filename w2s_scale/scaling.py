"""A sweep's results: tables (accuracy of every run, PGR of every pair and loss, means and 95%
intervals over seeds) and scaling plots in the style of the weak-to-strong paper's: test accuracy
against the strong model's size, one line per weak model plus the ceiling (each model trained on
ground truth), and PGR against the strong model's size. PNG files always; the same curves in the
W&B workspace when tracking.wandb is on.

Written to results/<name>/: summary.json / summary.csv (transfer rows, as `w2s summary` writes
them, with a dataset column), gt_summary.json / gt_summary.csv, paper_pgr and cross_dataset
(.json, .csv: w2s_scale/aggregate.py), summary.txt (the tables as printed), plots/<dataset>-<loss>-accuracy.png and plots/<dataset>-<loss>-pgr.png.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional

from w2s_scale.metrics import mean_interval
from w2s_scale.report import aggregate_tables, seed_text, summarize, unfinished_runs, write_rows
from w2s_scale.results import RunDir, atomic_write
from w2s_scale.sweep import SweepConfig, SweepRun, disk_state, sweep_dir
from w2s_scale.tracking import check_wandb


# --- tables --------------------------------------------------------------------------------------

def gt_rows(runs: list[SweepRun]) -> list[dict]:
    """One row per finished ground-truth run, then one per (dataset, model) over seeds."""
    rows = []
    for run in (r for r in runs if r.plan.kind == "gt" and disk_state(r) == "done"):
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
    """report.summarize per dataset (per-seed rows with a bootstrap PGR interval, then mean rows
    with a t-interval over seeds), with the dataset and an interval on transfer accuracy added."""
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
    """Every run, then the means over seeds (+- half-width of the 95% t-interval; PGR per seed
    with its bootstrap 95% interval over test examples)."""
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
        elif mean:
            half = None if r["pgr_lo"] is None else (r["pgr_hi"] - r["pgr_lo"]) / 2
            pgr = _pm(r["pgr"], half)
        else:
            pgr = _num(r["pgr"]) + ("" if r["pgr_lo"] is None else f" [{r['pgr_lo']:.2f}, {r['pgr_hi']:.2f}]")
        tr_lines.append([r["dataset"], r["weak"], r["strong"], r["loss"], seed_text(r),
                         _num(r["weak_acc"]), _num(r["ceiling_acc"]),
                         _pm(r["transfer_acc"], r.get("transfer_acc_ci95")) if mean else _num(r["transfer_acc"]),
                         pgr, _num(r.get("pgr_auc")), _num(r.get("pgr_paper")) if mean else ""])
    out += ["", "transfer runs: test accuracy and PGR = (transfer - weak) / (ceiling - weak); per-seed "
            "paired PGR (mean over seeds), AUC-PGR, and the reference's (median over seeds against "
            "the seed-mean weak and ceiling)",
            _table(["dataset", "weak", "strong", "loss", "seed", "weak", "ceiling", "transfer",
                    "PGR (per-seed paired)", "AUC-PGR", "PGR (reference)"],
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

        from w2s_scale.models import load_hf_config
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


def _size_label(n: Optional[int]) -> str:
    if n is None:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def curves(cfg: SweepConfig, gt: list[dict], transfer: list[dict]) -> dict:
    """{(dataset, loss): {"ceiling": [(model, acc, ci)], "weak": {weak: [(strong, acc, ci, pgr, pgr_ci)]}}}
    from the mean rows, models in sweep order."""
    order = [m.short_name for m in cfg.models]
    out = {}
    for data in cfg.datasets:
        ceiling = {r["model"]: r for r in gt if r["seed"] == "mean" and r["dataset"] == data.dataset}
        for loss in cfg.losses:
            lines = defaultdict(list)
            for r in transfer:
                if r["seed"] == "mean" and r["dataset"] == data.dataset and r["loss"] == loss.tag:
                    half = None if r["pgr_lo"] is None else (r["pgr_hi"] - r["pgr_lo"]) / 2
                    lines[r["weak"]].append((r["strong"], r["transfer_acc"], r.get("transfer_acc_ci95"),
                                             r["pgr"], half))
            for weak in lines:
                lines[weak].sort(key=lambda p: order.index(p[0]))
            out[(data.dataset, loss.tag)] = {
                "ceiling": [(m, ceiling[m]["accuracy"], ceiling[m].get("accuracy_ci95"))
                            for m in order if m in ceiling],
                "weak": {w: lines[w] for w in order if w in lines}}
    return out


def plot(cfg: SweepConfig, gt: list[dict], transfer: list[dict], out_dir: Path) -> list[Path]:
    """Two PNGs per (dataset, loss): accuracy and PGR against the strong model's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = parameter_counts(cfg)
    order = [m.short_name for m in cfg.models]
    by_size = all(sizes[m] for m in order) and len(set(sizes.values())) == len(order)
    x_of = {m: (sizes[m] if by_size else i) for i, m in enumerate(order)}
    cmap = plt.get_cmap("viridis")
    colors = lambda t: cmap(0.85 * t)  # noqa: E731 - the end of viridis is too pale on white
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def axis(ax, title: str, ylabel: str) -> None:
        if by_size:
            ax.set_xscale("log")
        ax.set_xticks([x_of[m] for m in order])
        ax.set_xticklabels([f"{m}\n{_size_label(sizes[m])}".strip() for m in order], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("strong model" + (" (parameters)" if by_size else ""))
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)

    for (dataset, loss), curve in curves(cfg, gt, transfer).items():
        weak_models = list(curve["weak"])
        color = {w: colors(i / max(1, len(order) - 1)) for i, w in enumerate(order)}
        fig, ax = plt.subplots(figsize=(6, 4.2))
        if curve["ceiling"]:
            ms, acc, ci = zip(*curve["ceiling"])
            ax.errorbar([x_of[m] for m in ms], acc, yerr=[c or 0 for c in ci], color="black",
                        linestyle="--", marker="o", capsize=3, label="ceiling (strong on ground truth)")
        for w in weak_models:
            pts = curve["weak"][w]
            ax.errorbar([x_of[p[0]] for p in pts], [p[1] for p in pts], yerr=[p[2] or 0 for p in pts],
                        color=color[w], marker="o", capsize=3, label=f"weak: {w}")
        axis(ax, f"{dataset}, {loss}: test accuracy", "test accuracy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{dataset}-{loss}-accuracy.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

        fig, ax = plt.subplots(figsize=(6, 4.2))
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axhline(1, color="grey", linewidth=0.8, linestyle=":")
        for w in weak_models:
            pts = [p for p in curve["weak"][w] if p[3] is not None]
            if pts:
                ax.errorbar([x_of[p[0]] for p in pts], [p[3] for p in pts], yerr=[p[4] or 0 for p in pts],
                            color=color[w], marker="o", capsize=3, label=f"weak: {w}")
        axis(ax, f"{dataset}, {loss}: performance gap recovered", "PGR")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{dataset}-{loss}-pgr.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def log_wandb(cfg: SweepConfig, gt: list[dict], transfer: list[dict], pngs: list[Path], out_dir: Path) -> None:
    """The tables, the curves as W&B line plots (drawn in the workspace from the data, so they
    can be restyled there), and the PNGs, in one run of job type `report`."""
    import wandb

    run = wandb.init(project=cfg.tracking.project, entity=cfg.tracking.entity, mode=check_wandb(cfg.tracking, out_dir),
                     group=cfg.name, name=f"{cfg.name}-scaling", job_type="report",
                     dir=str(out_dir), config=cfg.model_dump(mode="json"), reinit="finish_previous")
    sizes = parameter_counts(cfg)
    order = [m.short_name for m in cfg.models]
    x_of = {m: float(sizes[m] or i) for i, m in enumerate(order)}
    logged = {}
    for name, rows in (("gt_table", gt), ("transfer_table", transfer)):
        if rows:
            columns = list(dict.fromkeys(k for r in rows for k in r))
            logged[name] = wandb.Table(columns=columns, allow_mixed_types=True,  # seed: 0, 1, "mean"
                                       data=[[_plain(r.get(c)) for c in columns] for r in rows])
    for (dataset, loss), curve in curves(cfg, gt, transfer).items():
        keys, xs, ys, pgr_keys, pgr_xs, pgr_ys = [], [], [], [], [], []
        if curve["ceiling"]:
            keys.append("ceiling")
            xs.append([x_of[m] for m, _, _ in curve["ceiling"]])
            ys.append([a for _, a, _ in curve["ceiling"]])
        for w, pts in curve["weak"].items():
            keys.append(f"weak {w}")
            xs.append([x_of[p[0]] for p in pts])
            ys.append([p[1] for p in pts])
            defined = [p for p in pts if p[3] is not None]
            if defined:
                pgr_keys.append(f"weak {w}")
                pgr_xs.append([x_of[p[0]] for p in defined])
                pgr_ys.append([p[3] for p in defined])
        xname = "strong model parameters" if all(sizes.values()) else "strong model index"
        if keys:
            logged[f"{dataset}/{loss}/accuracy"] = wandb.plot.line_series(
                xs=xs, ys=ys, keys=keys, title=f"{dataset}, {loss}: test accuracy", xname=xname)
        if pgr_keys:
            logged[f"{dataset}/{loss}/pgr"] = wandb.plot.line_series(
                xs=pgr_xs, ys=pgr_ys, keys=pgr_keys, title=f"{dataset}, {loss}: PGR", xname=xname)
    for png in pngs:
        logged[f"plots/{png.stem}"] = wandb.Image(str(png))
    run.log(logged)
    run.finish()


def _plain(value):
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)


def report(cfg: SweepConfig, runs: list[SweepRun], plots: bool = True) -> dict:
    """Tables (printed and saved) and plots of what has finished; W&B if tracking.wandb is on."""
    out_dir = sweep_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    gt, transfer = gt_rows(runs), transfer_rows(runs)
    text = format_tables(gt, transfer)
    if transfer:
        text += "\n\n" + aggregate_tables(transfer, out_dir, [m.short_name for m in cfg.models])
    print(text, flush=True)
    lacking = unfinished_runs(r.plan for r in runs)
    if lacking:
        print(lacking, flush=True)
    write_rows(out_dir / "summary", transfer)
    write_rows(out_dir / "gt_summary", gt)
    atomic_write(out_dir / "summary.txt", text + "\n")
    pngs = []
    if plots and gt:
        try:
            pngs = plot(cfg, gt, transfer, out_dir / "plots")
        except ImportError:
            print("[w2s] no plots: matplotlib is missing (pip install 'w2s-scale[plot]')", flush=True)
    if cfg.tracking.wandb != "off":
        log_wandb(cfg, gt, transfer, pngs, out_dir)
    print(f"[w2s] summary written to {out_dir}/summary.{{txt,csv,json}} and gt_summary.{{csv,json}}"
          + (f"; plots in {out_dir / 'plots'}" if pngs else ""), flush=True)
    return {"gt": gt, "transfer": transfer, "plots": pngs}
