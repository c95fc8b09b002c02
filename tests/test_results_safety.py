"""Finished results are never lost or misreported: a run killed at any of its writes leaves
nothing a later run or the summary would trust; --redo keeps the finished run until its
replacement is complete; the summary reads only runs finished with this config's settings."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_w2s, tiny_config, write_config

WEAK = "jsonl/seed0/gt-gpt2-weak"
CRASH = REPO / "tests" / "helpers" / "crash_at_write.py"
# every write that publishes a run's result, in the order pipeline.execute makes them
WRITE_POINTS = ["test_predictions.jsonl", "weak_labels.jsonl", "config.yaml", "metrics.json",
                "model", "DONE"]


def crash_config(tmp_path: Path, tiny_models, tiny_data) -> Path:
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"])
    config["train"]["zero_stage"] = 0
    config["weak"]["save"] = "model16"  # so that the weights' folder is a write point too
    return write_config(tmp_path / "cfg.yaml", config)


def run_weak(cfg: Path, *extra: str, crash_at: str | None = None,
             snapshot_to: Path | None = None) -> subprocess.CompletedProcess:
    """`w2s run` of the weak model's ground-truth run, one rank, killed at `crash_at` (or, with
    crash_at="every", copied to `snapshot_to` as each kill would leave it)."""
    args = ["run", "-c", str(cfg), "--run-key", WEAK, *extra]
    if crash_at is None:
        return run_w2s(args)
    env = {**os.environ, "W2S_CRASH_AT": crash_at, **({"W2S_SNAPSHOT_TO": str(snapshot_to)} if snapshot_to else {})}
    return subprocess.run([sys.executable, str(CRASH), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=env)


def plans(cfg: Path):
    from w2s_scale.loading import load_config
    from w2s_scale.planning import plan_experiment

    return plan_experiment(load_config(cfg))


@pytest.fixture(scope="module")
def killed_at_each_write(tiny_models, tiny_data, tmp_path_factory) -> dict[str, Path]:
    """The weak run's folder as a kill just before each of its publishing writes leaves it, all
    from one process (crash_at_write.py, W2S_CRASH_AT=every): write point -> that copy. A SIGKILL
    runs nothing more, so the copy is what the kill leaves (the redo test below kills for real)."""
    root = tmp_path_factory.mktemp("killed-at-each-write")
    cfg = crash_config(root, tiny_models, tiny_data)
    proc = run_weak(cfg, crash_at="every", snapshot_to=root / "at")
    assert proc.returncode == 0, proc.stderr[-2000:]
    order = sorted((root / "at").iterdir(), key=lambda p: int(p.name.split("-", 1)[0]))
    at = [(p.name.split("-", 1)[1], p) for p in order]
    # every write point that publishes a result is reached once, in this order, DONE last
    assert [name for name, _ in at if name in WRITE_POINTS] == WRITE_POINTS == [
        name for name, _ in at[-len(WRITE_POINTS):]], [name for name, _ in at]
    return dict(at)


@pytest.mark.parametrize("point", WRITE_POINTS)
def test_a_run_killed_at_any_write_is_not_trusted(point, killed_at_each_write, tiny_models, tiny_data,
                                                  tmp_path):
    from w2s_scale.report import _load, unfinished_runs
    from w2s_scale.results import RunDir

    cfg = crash_config(tmp_path, tiny_models, tiny_data)
    weak = plans(cfg)[0]
    shutil.copytree(killed_at_each_write[point], weak.dir, symlinks=True)  # as the kill left it
    assert not (weak.dir / "DONE").exists()
    assert RunDir(weak.dir, weak.hash).state() == "partial"  # resumed, never skipped
    assert _load(weak) is None  # the summary does not read it
    assert f"partial  {weak.dir}" in unfinished_runs([weak])
    if point == "DONE":  # everything else was written: the rerun still runs it to the end
        again = run_weak(cfg)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "resuming in" in again.stdout and "done already" not in again.stdout
        assert RunDir(weak.dir, weak.hash).state() == "done" and _load(weak) is not None


def test_redo_keeps_the_finished_run_until_its_replacement_is_complete(tiny_models, tiny_data,
                                                                       tmp_path):
    from w2s_scale.results import RunDir

    cfg = crash_config(tmp_path, tiny_models, tiny_data)
    first = run_weak(cfg)
    assert first.returncode == 0, first.stderr[-2000:]
    weak = plans(cfg)[0]
    before = {name: (weak.dir / name).read_text() for name in ("DONE", "metrics.json",
                                                               "test_predictions.jsonl")}
    redo_dir = weak.dir.with_name(f".{weak.dir.name}.redo")

    # a redo killed at its last write (DONE): the finished run is untouched
    crashed = run_weak(cfg, "--redo", crash_at="DONE")
    assert crashed.returncode == -9
    assert {name: (weak.dir / name).read_text() for name in before} == before
    assert redo_dir.is_dir() and not (redo_dir / "DONE").exists()
    # without --redo the finished run is reused, and the waiting redo is mentioned
    reused = run_weak(cfg)
    assert reused.returncode == 0 and "done already, reused (an interrupted --redo" in reused.stdout
    # the next --redo resumes the waiting one and swaps it in at DONE
    redo = run_weak(cfg, "--redo")
    assert redo.returncode == 0, redo.stderr[-2000:]
    assert "resuming in" in redo.stdout and str(redo_dir) in redo.stdout
    assert not redo_dir.exists()
    assert (weak.dir / "DONE").read_text() != before["DONE"]  # the new run is in place
    assert RunDir(weak.dir, weak.hash).state() == "done"
    assert (weak.dir / "model" / "head.safetensors").exists()


def test_summary_does_not_present_another_configs_runs(tiny_models, tiny_data, tmp_path):
    """Runs finished with other settings (here: another lr) are stale, not this config's."""
    from w2s_scale.report import summarize

    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"])
    config["train"].update(zero_stage=0)
    cfg = write_config(tmp_path / "cfg.yaml", config)
    done = run_w2s(["experiment", "-c", str(cfg)])
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(summarize(plans(cfg))) == 2  # one seed row and its mean
    finished = (tmp_path / "results/tiny/summary.json").read_text()
    assert len(json.loads(finished)) == 2
    changed = write_config(tmp_path / "changed.yaml", dict(config, train={**config["train"], "lr": 5e-4}))
    summary = run_w2s(["summary", "-c", str(changed)])
    assert summary.returncode == 0, summary.stderr
    assert "no finished transfer runs" in summary.stdout
    assert "3 run(s) not in the summary" in summary.stdout
    assert summary.stdout.count("stale") == 3 and "--redo" in summary.stdout
    # nothing is written over the summary of the settings that did run
    assert (tmp_path / "results/tiny/summary.json").read_text() == finished
    # and a transfer run never trains on the labels of a weak run of other settings
    from w2s_scale.pipeline import weak_targets
    from w2s_scale.results import ResultsError

    transfer = plans(changed)[2]
    with pytest.raises(ResultsError, match="finished with other settings"):
        weak_targets(transfer, None)
    # the sweep report says the same
    report = run_w2s(["report", "-c", str(changed), "--no-plots"])
    assert report.returncode == 0, report.stderr
    assert "(none finished)" in report.stdout and "3 run(s) not in the summary" in report.stdout


def test_sweep_redo_submits_finished_runs_again_with_redo(tiny_models, tiny_data, tmp_path):
    """`w2s sweep --redo`: every run is redone (each job carries --redo), finished ones too."""
    from w2s_scale.loading import load_sweep
    from w2s_scale.sweep import plan_sweep

    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"])
    cfg = write_config(tmp_path / "cfg.yaml", config)
    runs = plan_sweep(load_sweep(cfg))
    for run in runs:  # as if every run had finished with these settings
        run.plan.dir.mkdir(parents=True)
        (run.plan.dir / "DONE").write_text(json.dumps({"hash": run.plan.hash}))
    plain = run_w2s(["sweep", "-c", str(cfg), "--dry-run", "--executor", "slurm"])
    assert plain.returncode == 0 and "sbatch " not in plain.stdout
    redo = run_w2s(["sweep", "-c", str(cfg), "--dry-run", "--executor", "slurm", "--redo"])
    assert redo.returncode == 0, redo.stderr
    jobs = [line for line in redo.stdout.splitlines() if line.startswith("  sbatch ")]
    assert len(jobs) == len(runs) == 3 and all(line.endswith(" --redo") for line in jobs)


def _run_folder(path: Path, config_hash: str, done_time: float | None, marker: str) -> None:
    path.mkdir(parents=True)
    (path / "which").write_text(marker)
    if done_time is not None:
        (path / "DONE").write_text(json.dumps({"hash": config_hash, "time": done_time}))


@pytest.mark.parametrize("stage, survivor", [
    ("redo DONE written, not yet swapped", "new"),
    ("swapped, the old run not yet deleted", "new"),
    ("fallback: the old run parked, the new one not yet moved", "new"),
    ("fallback: the new run moved, the old one still parked", "new"),
    ("redo unfinished", "old"),
])
def test_an_interrupted_swap_is_finished_by_the_next_attempt(stage, survivor, tmp_path):
    """Every state a redo's swap can be interrupted in: the run's folder holds a complete run
    (or, between the fallback's renames, the next RunDir.recover puts one back), and recovery
    keeps the newer complete run."""
    from w2s_scale.results import RunDir, exchange

    final = tmp_path / "gt-x"
    run = RunDir(final, "h")
    redo, parked = run.redo_path, final.with_name("gt-x.parked")
    if stage == "redo DONE written, not yet swapped":
        _run_folder(final, "h", 1.0, "old")
        _run_folder(redo, "h", 2.0, "new")
    elif stage == "swapped, the old run not yet deleted":
        _run_folder(final, "h", 1.0, "old")
        _run_folder(redo, "h", 2.0, "new")
        exchange(final, redo)
        assert (final / "which").read_text() == "new"
    elif stage.startswith("fallback: the old run parked"):
        _run_folder(parked, "h", 1.0, "old")
        _run_folder(redo, "h", 2.0, "new")
    elif stage.startswith("fallback: the new run moved"):
        _run_folder(parked, "h", 1.0, "old")
        _run_folder(final, "h", 2.0, "new")
    else:
        _run_folder(final, "h", 1.0, "old")
        _run_folder(redo, "h", None, "new")
    run.recover()
    assert (final / "which").read_text() == survivor and run.state() == "done"
    assert not parked.exists()
    assert redo.exists() == (survivor == "old")  # an unfinished redo waits for the next --redo
