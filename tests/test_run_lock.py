"""One writer per run: a second command that would train a run another command is training is
refused with one line naming the holder; the lock goes with DONE, or with its process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, finish, run_w2s, start_w2s, tiny_config, write_config

from w2s_scale.results import STARTED, ResultsError, RunDir

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from w2s_scale.results import RunDir
run = RunDir({path!r}, "h1")
run.prepare()  # held while `run` lives, as pipeline.execute holds its run
print("held", flush=True)
time.sleep(60)
"""
TRY = """
import sys
sys.path.insert(0, {repo!r})
from w2s_scale.results import ResultsError, RunDir
try:
    RunDir({path!r}, "h1").prepare()
except ResultsError as err:
    print(err)
    sys.exit(2)
"""


def _python(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code.format(repo=str(REPO), **kw)],
                          capture_output=True, text=True, timeout=120)


def test_a_second_writer_is_refused_with_who_holds_the_run(tmp_path):
    path = tmp_path / "exp" / "data" / "seed0" / "gt-a"
    run = RunDir(path, "h1")
    run.prepare()
    other = _python(TRY, path=str(path))
    assert other.returncode == 2, other.stderr
    assert "is being trained by another w2s command" in other.stdout
    assert f"pid {os.getpid()}" in other.stdout and "data/.locks/seed0.gt-a.lock" in other.stdout
    assert sorted(p.name for p in path.parent.iterdir()) == ["gt-a"]  # nothing else in the seed folder
    # the same process finishing the run gives the lock up
    run.mark_done()
    after = _python(TRY, path=str(path))
    assert after.returncode == 0, after.stdout + after.stderr


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    path = tmp_path / "exp" / "data" / "seed0" / "gt-b"
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=str(REPO), path=str(path))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ResultsError, match="being trained by another"):
            RunDir(path, "h1").prepare()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    RunDir(path, "h1").prepare()  # a dead holder holds nothing: no stale lock to clean up


def test_two_experiments_on_one_results_folder(tiny_models, tiny_data, tmp_path):
    """The real command twice at once: the second stops with one line; nothing of the first's
    run is touched."""
    config = tiny_config(tmp_path / "results", tiny_models, tiny_data, losses=["xent"])
    config["train"].update(zero_stage=0, epochs=200)  # long enough to be caught training
    cfg = write_config(tmp_path / "cfg.yaml", config)
    first = start_w2s(["experiment", "-c", str(cfg)], tmp_path / "first.log")
    started = tmp_path / "results/tiny/jsonl/seed0/gt-gpt2-weak" / STARTED
    deadline = time.time() + 300
    while not started.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    try:
        assert started.exists(), (tmp_path / "first.log").read_text()[-2000:]
        second = run_w2s(["experiment", "-c", str(cfg)], timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("w2s: error:")]
        assert len(errors) == 1 and "is being trained by another w2s command" in errors[0], errors
        assert f"pid {first.pid}" in errors[0]
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first goes on
    finally:
        os.killpg(first.pid, signal.SIGTERM)  # stops with a checkpoint (exit 75)
        code, _log = finish(first, tmp_path / "first.log", timeout=300)
    assert code == 75, _log[-2000:]
