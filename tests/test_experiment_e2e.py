"""A whole weak-to-strong experiment with tiny random-initialised GPT-2 models and the real GPT-2
tokenizer, under ZeRO-3 with 2 ranks, through torchrun and through the deepspeed launcher; and
resumption after the run is stopped by a signal and after it is killed outright.

The 2-rank experiment through torchrun, with its stop and its kill, is the session's
`interrupted_experiment` (tests/conftest.py), compared with `one_rank_experiment`."""
import json

import numpy as np

from conftest import (ELEUTHER, SCENARIO_RUNS, STRONG_STEPS, predictions, run_predictions, run_w2s,
                      scenario_config, write_config)


def test_zero3_two_ranks_whole_experiment_torchrun(interrupted_experiment, one_rank_experiment):
    results = interrupted_experiment.results
    code, out = interrupted_experiment.completed
    assert code == 0, out[-3000:]
    seed_dir = results / "tiny/jsonl/seed0"
    for run in SCENARIO_RUNS:
        run_dir = seed_dir / run
        assert (run_dir / "DONE").exists()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and 0 <= metrics["accuracy"] <= 1
        assert metrics["n_test"] == 64 and len(predictions(results, run)) == 64
        assert "zero_optimization" in (run_dir / "config.yaml").read_text()
        assert not (run_dir / "checkpoints").exists()  # weights are not kept by default
        # 2 ranks x micro 4 = the 1-rank run's 2 accumulation steps x micro 4: same results
        np.testing.assert_allclose(predictions(results, run), predictions(one_rank_experiment, run),
                                   atol=2e-4, err_msg=run)
    weak_labels = (seed_dir / "gt-gpt2-weak/weak_labels.jsonl").read_text().splitlines()
    assert len(weak_labels) == 80  # every example of B labelled once, none duplicated
    assert len({json.loads(l)["id"] for l in weak_labels}) == 80
    summary = json.loads((results / "tiny/summary.json").read_text())
    losses = {run.removeprefix("w2s-gpt2-weak-to-gpt2-strong-") for run in SCENARIO_RUNS[2:]}
    assert {(r["seed"], r["loss"]) for r in summary} == {(s, l) for s in (0, "mean") for l in losses}
    assert "PGR" in out and "gpt2-weak" in out
    # a second call finds every run complete and does no training
    again = interrupted_experiment.again
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done already, reused") == len(SCENARIO_RUNS)


def test_zero3_two_ranks_deepspeed_launcher(tiny_models, tiny_data, tmp_path, one_rank_experiment):
    """The deepspeed launcher starts the ranks as torchrun does: one run of the experiment (the
    weak model's, which also labels B) gives the 1-rank result, written once, by rank 0."""
    cfg = write_config(tmp_path / "cfg.yaml", scenario_config(tmp_path / "results", tiny_models,
                                                              tiny_data))
    proc = run_w2s(["run", "-c", str(cfg), "--run-key", "jsonl/seed0/gt-gpt2-weak",
                    "--launcher", "deepspeed", "--nproc", "2"], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "results/tiny/jsonl/seed0/gt-gpt2-weak"
    assert (run_dir / "DONE").exists() and not (run_dir / "checkpoints").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["n_test"] == 64
    assert "zero_optimization" in (run_dir / "config.yaml").read_text()
    np.testing.assert_allclose(predictions(tmp_path / "results", "gt-gpt2-weak"),
                               predictions(one_rank_experiment, "gt-gpt2-weak"), atol=2e-4)
    weak_labels = (run_dir / "weak_labels.jsonl").read_text().splitlines()
    assert len(weak_labels) == 80 and len({json.loads(l)["id"] for l in weak_labels}) == 80
    events = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
    assert len({e["step"] for e in events if e["event"] == "train"}) == 10  # rank 0 logs alone
    assert len([e for e in events if e["event"] == "train"]) == 10


def test_stopped_and_killed_run_resumes_to_the_same_result(interrupted_experiment,
                                                           one_rank_experiment):
    run = interrupted_experiment
    # 1. a preemption warning: checkpoint at the next step, exit 75 (rerun resumes)
    code, out = run.stop
    assert code == 75, out[-2000:]
    assert "checkpoint saved, rerun the same command to resume" in out
    assert run.stopped_at != run.first_checkpoint  # the stop saved a checkpoint of its own
    # 2. killed outright (no chance to save) after the next periodic checkpoint: not finished
    assert run.killed_after != run.stopped_at and not run.done_after_kill
    # 3. the same command finished the job, continuing from the last checkpoint each time
    code, out = run.completed
    assert code == 0, out[-3000:]
    events = [json.loads(l) for l in (run.interrupted / "log.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["event"] == "resumed"]
    assert len(resumed) == 2 and resumed[0]["step"] == int(run.stopped_at.removeprefix("step"))
    assert resumed[1]["step"] >= int(run.killed_after.removeprefix("step"))
    steps = [e["step"] for e in events if e["event"] == "train"]
    assert steps[-1] == STRONG_STEPS and steps.count(1) == 1  # started once from scratch, never again
    # the interrupted run ends where an uninterrupted one does: the redo of it, in one go
    code, out = run.redo
    assert code == 0, out[-3000:]
    np.testing.assert_allclose(predictions(run.results, ELEUTHER), run_predictions(run.interrupted),
                               atol=1e-5)
