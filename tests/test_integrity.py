"""A finished run is trusted only if it is whole (issue 19, part 1): DONE records what the run
wrote, every reader checks it, and a run whose files changed is named in one line and redone.
The same for checkpoints (a resume loads the newest good one) and the sweep's own state files."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_w2s, tiny_config, write_config

WEAK = "gt-gpt2-weak"
SEED = "tiny/jsonl/seed0"
# every kind of file a finished run holds, and every way it can be damaged
FILES = ["weak_labels.jsonl", "test_predictions.jsonl", "metrics.json", "config.yaml",
         "model/head.safetensors", "DONE"]
DAMAGES = ["truncate", "edit a byte", "delete", "add rows"]


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "edit a byte":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:])
    elif how == "delete":
        path.unlink()
    else:  # a row more (for a file that is not jsonl: bytes appended)
        path.write_bytes(data + b'{"id": "extra", "p1": 0.5, "label": 1}\n')


def config(root: Path, tiny_models, tiny_data) -> dict:
    cfg = tiny_config(root / "results", tiny_models, tiny_data, losses=["xent"])
    cfg["train"]["zero_stage"] = 0
    cfg["weak"]["save"] = "model16"  # the weights' folder is one of the run's files too
    return cfg


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_models, tiny_data) -> Path:
    """One finished experiment (weak, ceiling, one transfer run), copied by each case."""
    root = tmp_path_factory.mktemp("finished")
    cfg = write_config(root / "cfg.yaml", config(root, tiny_models, tiny_data))
    proc = run_w2s(["experiment", "-c", str(cfg)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def copy_of(finished: Path, tmp_path: Path, tiny_models, tiny_data) -> Path:
    shutil.copytree(finished / "results", tmp_path / "results")
    return write_config(tmp_path / "cfg.yaml", config(tmp_path, tiny_models, tiny_data))


def test_done_records_every_file_the_run_wrote(finished):
    done = json.loads((finished / "results" / SEED / WEAK / "DONE").read_text())
    files = done["files"]
    assert {"weak_labels.jsonl", "test_predictions.jsonl", "metrics.json", "config.yaml",
            "model/head.safetensors"} <= set(files)
    assert files["weak_labels.jsonl"]["rows"] == 80 and len(files["metrics.json"]["sha256"]) == 64
    assert not any(f.startswith(("log.jsonl", "checkpoints", "started")) for f in files)


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", FILES)
def test_every_reader_names_a_damaged_run_and_treats_it_as_unfinished(name, how, finished, tmp_path,
                                                                       tiny_models, tiny_data):
    from w2s_scale import executors
    from w2s_scale.loading import load_config, load_sweep
    from w2s_scale.pipeline import weak_targets
    from w2s_scale.planning import plan_experiment
    from w2s_scale.report import _load, summarize, unfinished_runs
    from w2s_scale.results import ResultsError, inspect
    from w2s_scale.sweep import plan_sweep

    cfg = copy_of(finished, tmp_path, tiny_models, tiny_data)
    plans = plan_experiment(load_config(cfg))
    weak = next(p for p in plans if p.name == WEAK)
    damage(weak.dir / name, how)

    state, problem = inspect(weak.dir, weak.hash)
    if name == "DONE" and how == "delete":
        assert state == "partial"  # no DONE: unfinished, resumed
        return
    assert state == "damaged", (state, problem)
    expect = "DONE" if name == "DONE" and how in ("truncate", "add rows") else name
    if name == "DONE" and how == "edit a byte":
        expect = ""  # a byte of the record itself: it names whichever file no longer matches
    assert expect in problem
    # the summary: not summarised, named in one line
    assert _load(weak) is None and summarize(plans) == []
    lines = [line for line in unfinished_runs(plans).splitlines() if str(weak.dir) in line]
    assert len(lines) == 1 and "damaged" in lines[0] and problem in lines[0]
    # the next stage refuses its labels with one line
    transfer = next(p for p in plans if p.kind == "transfer")
    with pytest.raises(ResultsError, match="not trusted") as err:
        weak_targets(transfer, None)
    assert "\n" not in str(err.value) and problem in str(err.value)
    # the sweep: status names it, the plan redoes it
    sweep = load_sweep(cfg)
    runs = plan_sweep(sweep)
    status = {s.run.key: s for s in executors.sweep_status(sweep, runs)}[f"jsonl/seed0/{WEAK}"]
    assert status.state == "damaged" and problem in status.detail
    text = executors.format_plan(sweep, runs, "local", lambda run: 1)
    assert [line for line in text.splitlines() if WEAK + " " in line][0].lstrip().startswith("redo")


def test_damaged_run_one_line_per_command_and_redone(finished, tmp_path, tiny_models, tiny_data):
    """The commands as a user runs them: summary, status and report name the damaged file in one
    line and write nothing over the finished summary; the next `w2s experiment` redoes it."""
    cfg = copy_of(finished, tmp_path, tiny_models, tiny_data)
    run_dir = tmp_path / "results" / SEED / WEAK
    summary = tmp_path / "results/tiny/summary.json"
    before = summary.read_text()
    damage(run_dir / "weak_labels.jsonl", "edit a byte")
    for args, code in ((["summary"], 0), (["status"], 3), (["report", "--no-plots"], 0)):
        proc = run_w2s([*args, "-c", str(cfg)])
        out = proc.stdout + proc.stderr
        assert proc.returncode == code and "Traceback" not in out, out[-3000:]
        assert len([line for line in out.splitlines() if "weak_labels.jsonl" in line]) == 1, out
    assert summary.read_text() == before  # summary: no rows, so nothing written over it
    again = run_w2s(["experiment", "-c", str(cfg)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("not trusted, redoing the run") == 1
    assert "weak_labels.jsonl has other content" in again.stdout
    from w2s_scale.results import inspect

    assert inspect(run_dir, json.loads((run_dir / "DONE").read_text())["hash"])[0] == "done"
    assert not (run_dir / "DONE.damaged").exists()


def test_a_done_written_before_records_is_trusted_as_before(tmp_path):
    from w2s_scale.results import inspect

    run = tmp_path / "gt-old"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    (run / "DONE").write_text(json.dumps({"hash": "h", "time": 1.0}))
    assert inspect(run, "h") == ("done", None)


# --- checkpoints -----------------------------------------------------------------------------------

CRASH = REPO / "tests" / "helpers" / "crash_at_write.py"


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, tiny_models, tiny_data) -> Path:
    """The weak run killed after training (before its first result file): a checkpoint after
    every step, the last three kept."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("checkpointed")
    cfg = config(root, tiny_models, tiny_data)
    cfg["weak"]["save"] = "none"
    cfg["train"].update(checkpoint_every=1, keep_checkpoints=3)
    path = write_config(root / "cfg.yaml", cfg)
    proc = subprocess.run([sys.executable, str(CRASH), "run", "-c", str(path), "--run-key",
                           f"jsonl/seed0/{WEAK}"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "W2S_CRASH_AT": "test_predictions.jsonl"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    return root


CKPT_FILES = ["model states", "w2s_record.json", "latest_step"]


@pytest.mark.parametrize("how", ["truncate", "edit a byte", "delete"])
@pytest.mark.parametrize("which", CKPT_FILES)
def test_a_damaged_checkpoint_is_named_and_the_previous_good_one_resumed(which, how, checkpointed,
                                                                        tmp_path, capsys):
    from w2s_scale.engine import latest_checkpoint
    from w2s_scale.results import resume_tag

    ckpts = tmp_path / "checkpoints"
    shutil.copytree(checkpointed / "results" / SEED / WEAK / "checkpoints", ckpts)
    tags = sorted((p.name for p in ckpts.glob("step*")), key=lambda t: int(t[4:]))
    newest, previous = tags[-1], tags[-2]
    assert latest_checkpoint(ckpts) == newest and len(tags) == 3
    if which == "latest_step":
        target = ckpts / "latest_step"
    elif which == "w2s_record.json":
        target = ckpts / newest / which
    else:
        target = sorted((ckpts / newest).glob("*model_states.pt"))[0]
    damage(target, how)
    choice = resume_tag(ckpts, latest_checkpoint(ckpts))
    out = capsys.readouterr().out
    if which == "latest_step" and how == "edit a byte":
        # the pointer still names a step (one digit changed, or a letter): the newest good one
        assert choice in tags, out
        return
    if which == "latest_step":  # no pointer: the newest checkpoint whose record matches
        assert choice == newest, out
        return
    assert choice == previous, out
    lines = [line for line in out.splitlines() if newest in line]
    assert len(lines) == 1 and f"resuming from {previous}" in lines[0], out
    assert not (ckpts / newest).exists()  # removed, so pruning keeps the good ones


def test_a_run_resumes_from_the_previous_good_checkpoint(checkpointed, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(checkpointed, root)
    cfg_text = (root / "cfg.yaml").read_text().replace(str(checkpointed), str(root))
    (root / "cfg.yaml").write_text(cfg_text)
    ckpts = root / "results" / SEED / WEAK / "checkpoints"
    tags = sorted((p.name for p in ckpts.glob("step*")), key=lambda t: int(t[4:]))
    damage(sorted((ckpts / tags[-1]).glob("*model_states.pt"))[0], "truncate")
    proc = run_w2s(["run", "-c", str(root / "cfg.yaml"), "--run-key", f"jsonl/seed0/{WEAK}"])
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"resuming from {tags[-2]}" in proc.stdout
    events = [json.loads(line) for line in (ckpts.parent / "log.jsonl").read_text().splitlines()]
    assert [e for e in events if e["event"] == "resumed"][-1]["step"] == int(tags[-2][4:])


# --- the sweep's own state files -------------------------------------------------------------------

@pytest.mark.parametrize("how", ["truncate", "edit a byte"])
def test_the_sweeps_state_files_are_checked(how, tmp_path, tiny_models, tiny_data, capsys):
    from w2s_scale import executors
    from w2s_scale.errors import ConfigFileError
    from w2s_scale.loading import load_sweep, read_config_file
    from w2s_scale.sweep import plan_sweep

    cfg = write_config(tmp_path / "cfg.yaml", config(tmp_path, tiny_models, tiny_data))
    sweep = load_sweep(cfg)
    run = plan_sweep(sweep)[0]
    book = executors.JobBook(sweep)
    book.put(run, executor="local", status="done", rc=0)
    assert executors.JobBook(sweep).get(run)["status"] == "done"
    damage(book.path, how)
    capsys.readouterr()
    assert executors.JobBook(sweep).entries == {}
    lines = [line for line in capsys.readouterr().out.splitlines() if "jobs.json" in line]
    assert len(lines) == 1 and "not trusted" in lines[0]
    snapshot = executors.snapshot(sweep)
    damage(snapshot, how)
    with pytest.raises(ConfigFileError, match="changed since it was written"):
        read_config_file(snapshot)
    assert executors.snapshot(sweep) == snapshot  # written again
    read_config_file(snapshot)
