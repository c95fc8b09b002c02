"""A W&B Report of a sweep, built in code with wandb-workspaces (`w2s report --wandb-report`).

The report reads what the sweep logged: the report run (scaling.log_wandb: the curve tables, the
scaling curves as line series, the figures) and the run pages (tracking.Tracker: training curves
and test metrics). It holds a text block saying what was run, a section per dataset with its
scaling-curve panels, a section with the paper's cross-dataset summary, one with the median pooled
over supervisors (under that name), and one run set for the sweep. Its text states the one PGR
definition (metrics.PGR_DEFINITION).

No network is needed to build it: the definition is saved as JSON next to the sweep's results,
and published later with

    python -m w2s_scale.wandb_report publish results/<sweep>/wandb_report.json [--entity E]

The keys the report refers to are named here once (and used by scaling.log_wandb to log them),
so the report and the logged data cannot drift apart silently; tests check both.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional
from w2s_scale.figures import POOLED_CAPTION, size_label
from w2s_scale.metrics import PGR_DEFINITION

POINTS_TABLE = "scaling/points"          # figures.tables(): every curve point with its interval
SUMMARY_TABLE = "scaling/summary"        # the paper's summary: median across datasets per supervisor
POOLED_TABLE = "scaling/pooled_median_pgr"  # median PGR pooled over datasets and supervisors
LINE_SERIES_SPEC = "wandb/lineseries/v0"  # the Vega spec wandb.plot.line_series logs with
# the run pages: what Tracker logs for every run (event/field), read by the training panels
RUN_PAGE_KEYS = {
    "training loss": "train/loss",
    "agreement with the targets (transfer runs: the weak labels)": "train/agreement",
    "examples per second": "train/examples_per_s",
    "tokens per second": "train/tokens_per_s",
}


def curve_key(dataset: str, loss: str, metric: str) -> str:
    return f"scaling/{dataset}/{loss}/{metric}"


def image_key(png: Path) -> str:
    return f"figures/{png.stem}"


def curves(points: list[dict]) -> dict[tuple[str, str, str], dict[str, list[tuple[float, float]]]]:
    """{(dataset, loss, "accuracy" | "pgr"): {line label: [(parameters, value)]}} from the curve
    points: the ceiling and one line per weak supervisor, as the figures draw them."""
    out: dict = defaultdict(lambda: defaultdict(list))
    transfer = [r for r in points if r["kind"] == "transfer" and r["weak"] != r["strong"]]
    for r in sorted(transfer, key=lambda r: r["params"] or 0):
        out[(r["dataset"], r["loss"], "accuracy")][f"weak {r['weak']}"].append((r["params"], r["accuracy"]))
        if r["pgr"] is not None:
            out[(r["dataset"], r["loss"], "pgr")][f"weak {r['weak']}"].append((r["params"], r["pgr"]))
    losses = {r["loss"] for r in transfer}
    for r in sorted((r for r in points if r["kind"] == "ceiling"), key=lambda r: r["params"] or 0):
        for loss in losses:
            if (r["dataset"], loss, "accuracy") in out:
                out[(r["dataset"], loss, "accuracy")]["ceiling"].append((r["params"], r["accuracy"]))
    return {k: dict(v) for k, v in out.items()}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def what_was_run(cfg, points: list[dict]) -> str:
    """The text block: models (role, size), datasets, seeds, losses, commit."""
    sizes = {r["strong"]: r["params"] for r in points if r["params"]}
    models = "; ".join(f"{m.short_name} ({m.name}, {getattr(m, 'role', 'both')}, "
                       f"{size_label(sizes.get(m.short_name))} parameters)" for m in cfg.models)
    datasets = "; ".join(f"{d.dataset} (A + B = {d.n_train} documents, {d.n_test} test, "
                         f"max {d.max_length} tokens)" for d in cfg.datasets)
    return (f"Sweep {cfg.name}. Models: {models}. Datasets: {datasets}. Seeds: "
            f"{', '.join(map(str, cfg.seeds))}. Losses: {', '.join(loss.tag for loss in cfg.losses)}. "
            f"Commit {_commit()}. Accuracy is the mean over seeds; {PGR_DEFINITION}. Both with 95% "
            f"bootstrap intervals over seeds and test examples (table {POINTS_TABLE}).")


def build_report(cfg, points: list[dict], summary_rows: list[dict], pngs: list[Path],
                 logged: Optional[dict[str, str]] = None, pooled_rows: Optional[list[dict]] = None):
    """The report object (wandb_workspaces.reports.v2.Report); nothing is sent anywhere.
    `logged`: the keys the report run logged (scaling.log_wandb); where given, a panel for a
    key that was not logged is an error, so a renamed metric fails here and not in a reader's
    browser."""
    import wandb_workspaces.reports.v2 as wr

    entity, project = cfg.tracking.entity or "", cfg.tracking.project
    groups = [cfg.name] + [f"{cfg.name}/seed{s}" for s in cfg.seeds]  # report run, run pages
    runset = wr.Runset(entity=entity, project=project, name=f"sweep {cfg.name}",
                       filters=f"Group in {json.dumps(groups)}")

    def need(key: str) -> str:
        if logged is not None and key not in logged:
            raise KeyError(f"the report refers to {key!r}, which the report run did not log")
        return key

    def line_series(dataset: str, loss: str, metric: str):
        return wr.CustomChart(
            # the query W&B's own line_series chart runs (id and name as empty field selections)
            query={"summaryTable": {"tableKey": need(curve_key(dataset, loss, metric)) + "_table"},
                   "id": {}, "name": {}},
            chart_name=LINE_SERIES_SPEC,
            chart_fields={"step": "step", "lineKey": "lineKey", "lineVal": "lineVal"},
            chart_strings={"title": f"{dataset}, {loss}: {'test accuracy' if metric == 'accuracy' else 'PGR'}",
                           "xname": "strong model parameters"})

    by_name = {p.stem: p for p in pngs}
    lines = curves(points)
    blocks = [wr.H1(f"Weak-to-strong scaling: {cfg.name}"), wr.P(what_was_run(cfg, points))]
    for dataset in dict.fromkeys(r["dataset"] for r in points):
        panels = []
        for loss in (loss.tag for loss in cfg.losses):
            panels += [line_series(dataset, loss, m) for m in ("accuracy", "pgr") if (dataset, loss, m) in lines]
            if f"{dataset}-{loss}" in by_name:
                panels.append(wr.MediaBrowser(title=f"{dataset}, {loss} (with intervals)",
                                              media_keys=[need(image_key(by_name[f"{dataset}-{loss}"]))]))
        blocks += [wr.H2(f"Dataset {dataset}"), wr.PanelGrid(runsets=[runset], panels=panels)]
    summary_panels = [wr.WeavePanelSummaryTable(table_name=need(POINTS_TABLE))]
    if summary_rows:
        summary_panels.insert(0, wr.WeavePanelSummaryTable(table_name=need(SUMMARY_TABLE)))
    summary_panels += [wr.MediaBrowser(title=stem, media_keys=[need(image_key(p))])
                       for stem, p in by_name.items() if stem.startswith(("summary", "grid"))]
    blocks += [wr.H2("Across datasets: the paper's summary, one line per weak supervisor"),
               wr.P("Per loss, weak supervisor and student: the median across datasets of that point's "
                    "test accuracy and PGR, as Burns et al. 2023 (figure 3) summarise their NLP tasks; "
                    "95% intervals from each dataset's bootstrap draws, the median taken draw by draw. "
                    + PGR_DEFINITION + "."),
               wr.PanelGrid(runsets=[runset], panels=summary_panels)]
    pooled_panels = [wr.MediaBrowser(title=stem, media_keys=[need(image_key(p))])
                     for stem, p in by_name.items() if stem.startswith("pooled")]
    if pooled_rows:
        pooled_panels.insert(0, wr.WeavePanelSummaryTable(table_name=need(POOLED_TABLE)))
    if pooled_panels:
        blocks += [wr.H2("Pooled over supervisors: median PGR by loss and student size"),
                   wr.P(f"The {POOLED_CAPTION}: one median over every (dataset, weak supervisor) task "
                        "per loss and student."),
                   wr.PanelGrid(runsets=[runset], panels=pooled_panels)]
    run_panels = [wr.LinePlot(title=title, x="Step", y=[key]) for title, key in RUN_PAGE_KEYS.items()]
    run_panels.append(wr.RunComparer(diff_only="split"))
    blocks += [wr.H2("Run pages: training of every run"),
               wr.P("Each run's page holds its loss curve, agreement with its targets, test accuracy "
                    "and AUC, its weak supervisor and that supervisor's accuracy, the PGR (filled in by "
                    "`w2s report`), and examples/s and tokens/s."),
               wr.PanelGrid(runsets=[runset], panels=run_panels)]
    return wr.Report(entity=entity, project=project, title=f"w2s-scale: {cfg.name}"[:128],
                     description="Weak-to-strong scaling curves (w2s-scale)", blocks=blocks)


def report_json(report) -> dict:
    """The report's definition as plain JSON (what the W&B API stores)."""
    return report._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


def save_report(cfg, runs, points: list[dict], summary_rows: list[dict], pooled_rows: list[dict],
                pngs: list[Path], logged: dict[str, str], out_dir: Path) -> Path:
    """Build the report and save its definition; publish now when W&B is online, else print
    the command that publishes it later."""
    report = build_report(cfg, points, summary_rows, pngs, logged or None, pooled_rows)
    path = out_dir / "wandb_report.json"
    path.write_text(json.dumps(report_json(report), indent=1) + "\n")
    print(f"[w2s] W&B report definition saved to {path}", flush=True)
    if cfg.tracking.wandb == "online":
        try:
            print(f"[w2s] W&B report published: {publish(path)}", flush=True)
            return path
        except Exception as err:  # noqa: BLE001 - no network, no login: publish later
            print(f"[w2s] the report was not published ({type(err).__name__}: "
                  f"{str(err).splitlines()[0][:120]})", flush=True)
    hint = "" if cfg.tracking.wandb == "online" else (
        f"sync the runs first (wandb sync {out_dir}/wandb/offline-run-* and each run's folder), then ")
    print(f"[w2s] to publish it: {hint}python -m w2s_scale.wandb_report publish {path}", flush=True)
    return path


def load_report(path: Path, entity: Optional[str] = None):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import internal

    spec = internal.ReportViewspec.model_validate(json.loads(Path(path).read_text()))
    report = wr.Report._from_model(spec)
    if entity or not report.entity:
        import wandb

        report.entity = entity or wandb.Api().default_entity
        for block in report.blocks:
            for runset in getattr(block, "runsets", []):
                runset.entity = report.entity
    return report


def publish(path: Path, entity: Optional[str] = None) -> str:
    """Create the report on W&B (needs network and `wandb login`); returns its URL."""
    report = load_report(path, entity)
    report.save()
    return report.url


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m w2s_scale.wandb_report")
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="create a saved report definition on W&B")
    pub.add_argument("file", type=Path)
    pub.add_argument("--entity", help="W&B entity (default: the report's, else your default)")
    args = parser.parse_args(argv)
    if not args.file.exists():
        print(f"w2s: error: {args.file} does not exist; give the wandb_report.json that "
              f"`w2s report --wandb-report` wrote", file=sys.stderr)
        return 2
    print(publish(args.file, args.entity))
    return 0


if __name__ == "__main__":
    sys.exit(main())
