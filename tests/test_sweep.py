"""Sweeps without a cluster: the plan (a DAG sharing runs with `w2s experiment`), reuse and
extension, config errors, the Slurm job options, status and its reasons, the summary tables and
plots; and a small sweep carried out by the local executor."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, finish, run_w2s, start_w2s, tiny_config, write_config  # noqa: E402

from w2s_scale import executors as ex  # noqa: E402
from w2s_scale import slurm  # noqa: E402
from w2s_scale.config import ConfigError  # noqa: E402
from w2s_scale.loading import load_config  # noqa: E402
from w2s_scale.planning import plan_experiment  # noqa: E402
from w2s_scale.sweep import disk_state, find_run, plan_sweep  # noqa: E402
from w2s_scale.loading import load_sweep  # noqa: E402


def sweep_dict(root: Path, models: dict, data: Path, n_models: int = 3, **extra) -> dict:
    names = ["gpt2-weak", "gpt2-strong", "qwen2"][:n_models]
    base = tiny_config(root / "results", models, data)
    cfg = {k: base[k] for k in ("name", "results_dir", "data", "train", "tracking")}
    cfg.update(name="sweep", models=[{"name": str(models[n]), "label": n} for n in names],
               seeds=[0, 1], losses=["xent", "logconf"])
    cfg.update(extra)
    return cfg


@pytest.fixture
def fake_models(tmp_path):
    """Model folders are only read when runs start: plans need names only."""
    return {n: tmp_path / "models" / n for n in ("gpt2-weak", "gpt2-strong", "qwen2")}


def load(tmp_path, cfg: dict, overrides=()):
    return load_sweep(write_config(tmp_path / "sweep.yaml", cfg), list(overrides))


def mark_done(run) -> None:
    run.plan.dir.mkdir(parents=True, exist_ok=True)
    (run.plan.dir / "DONE").write_text(json.dumps({"hash": run.plan.hash}))


def test_plan_is_a_dag_over_sizes_seeds_losses(tmp_path, fake_models):
    cfg = load(tmp_path, sweep_dict(tmp_path, fake_models, tmp_path / "d.jsonl"))
    runs = plan_sweep(cfg)
    gt = [r for r in runs if r.plan.kind == "gt"]
    transfer = [r for r in runs if r.plan.kind == "transfer"]
    assert len(gt) == 2 * 3  # seeds x models
    assert len(transfer) == 2 * (3 + 2 + 1) * 2  # seeds x (weak <= strong pairs) x losses
    keys = [r.key for r in runs]
    assert len(set(keys)) == len(keys)
    for run in transfer:  # a transfer run depends on its weak model's gt run, same seed, only
        (dep,) = run.deps
        weak = run.plan.weak
        assert dep == f"jsonl/seed{run.seed}/gt-{weak.model.short_name}"
        assert keys.index(dep) < keys.index(run.key)
        assert run.plan.model.short_name in ("gpt2-weak", "gpt2-strong", "qwen2")
    order = ["gpt2-weak", "gpt2-strong", "qwen2"]
    assert all(order.index(r.plan.weak.model.short_name) <= order.index(r.plan.model.short_name)
               for r in transfer)
    no_self = load(tmp_path, sweep_dict(tmp_path, fake_models, tmp_path / "d.jsonl", self_transfer=False))
    assert sum(r.plan.kind == "transfer" for r in plan_sweep(no_self)) == 2 * 3 * 2
    assert find_run(runs, "gt-qwen2", 1, None).key == "jsonl/seed1/gt-qwen2"
    two = sweep_dict(tmp_path, fake_models, tmp_path / "d.jsonl")
    two["datasets"] = [two.pop("data"), {"dataset": "csv", "path": str(tmp_path / "d.csv")}]
    runs2 = plan_sweep(load(tmp_path, two))
    assert len(runs2) == 2 * len(runs) and {r.key.split("/")[0] for r in runs2} == {"jsonl", "csv"}
    assert all(d.split("/")[0] == r.dataset for r in runs2 for d in r.deps)
    with pytest.raises(ConfigError, match="add --seed"):
        find_run(runs, "gt-qwen2", None, None)


def test_sweep_shares_runs_with_experiment(tmp_path, fake_models):
    """Same folders and hashes as `w2s experiment`: one's finished runs are the other's."""
    data = tmp_path / "d.jsonl"
    exp = load_config(raw=tiny_config(tmp_path / "results", fake_models, data, name="sweep"))
    sweep = load(tmp_path, sweep_dict(tmp_path, fake_models, data, n_models=2, seeds=[0]))
    in_sweep = {(r.plan.dir, r.plan.hash) for r in plan_sweep(sweep)}
    assert {(p.dir, p.hash) for p in plan_experiment(exp)} <= in_sweep
    # an experiment YAML is read as the sweep of its two models: exactly its runs
    as_sweep = load_sweep(write_config(tmp_path / "exp.yaml", tiny_config(
        tmp_path / "results", fake_models, data, name="sweep")))
    assert [(r.plan.dir, r.plan.hash) for r in plan_sweep(as_sweep)] == [
        (p.dir, p.hash) for p in plan_experiment(exp)]
    # catalogue models (whose entries fill train settings) too, and through the snapshot that
    # Slurm jobs are started from
    cat = tiny_config(tmp_path / "results", fake_models, data, name="sweep")
    cat.update(weak={"name": "gpt2"}, strong={"name": "qwen2.5-0.5b"})
    cat["train"] = {"epochs": 1, "batch_size": 32}
    exp = load_config(raw=cat)
    sweep = load_sweep(write_config(tmp_path / "cat.yaml", cat))
    assert {(p.dir, p.hash) for p in plan_experiment(exp)} == {(r.plan.dir, r.plan.hash)
                                                               for r in plan_sweep(sweep)}
    again = load_sweep(ex.snapshot(sweep))
    assert [r.plan.hash for r in plan_sweep(again)] == [r.plan.hash for r in plan_sweep(sweep)]


def test_reuse_and_extension_run_only_what_is_new(tmp_path, fake_models):
    data = tmp_path / "d.jsonl"
    small = load(tmp_path, sweep_dict(tmp_path, fake_models, data, n_models=2, seeds=[0]))
    for run in plan_sweep(small):
        mark_done(run)
    bigger = load(tmp_path, sweep_dict(tmp_path, fake_models, data, n_models=3, seeds=[0, 1]))
    runs = plan_sweep(bigger)
    todo = [r.key for r in runs if disk_state(r) != "done"]
    reused = [r.key for r in runs if disk_state(r) == "done"]
    assert len(reused) == 2 + 3 * 2  # the small sweep's gt runs and its 3 pairs x 2 losses
    assert len(todo) == len(runs) - len(reused)
    assert all(k.startswith("jsonl/seed1/") or "qwen2" in k for k in todo)
    plan_text = ex.format_plan(bigger, runs, "local", lambda r: 1)
    assert f"{len(reused)} reused (done), {len(todo)} to run" in plan_text
    assert "reused   jsonl/seed0/gt-gpt2-weak " in plan_text
    assert "run      jsonl/seed0/w2s-gpt2-weak-to-qwen2-xent" in plan_text
    assert "needs jsonl/seed0/gt-gpt2-weak (done)" in plan_text
    # other train settings are other runs (other hashes): nothing reused, and a DONE folder
    # of other settings is reported as a conflict rather than silently overwritten
    changed = load(tmp_path, sweep_dict(tmp_path, fake_models, data, n_models=2, seeds=[0]),
                   ["train.lr=0.5"])
    assert {disk_state(r) for r in plan_sweep(changed)} == {"conflict"}


def test_a_model_can_take_fewer_seeds_than_the_sweep(tmp_path, fake_models):
    """models[i].seeds: a model's runs, and the pairs it is in, on its seeds only; the runs it
    does have are the same runs (same hashes) as without the field."""
    data = tmp_path / "d.jsonl"
    every = plan_sweep(load(tmp_path, sweep_dict(tmp_path, fake_models, data, seeds=[0, 1, 2],
                                                 self_transfer=False, losses=["xent"])))
    cfg = sweep_dict(tmp_path, fake_models, data, seeds=[0, 1, 2], self_transfer=False,
                     losses=["xent"])
    cfg["models"][2]["seeds"] = [1]
    some = plan_sweep(load(tmp_path, cfg))
    assert {r.seed for r in some if "qwen2" in r.name} == {1}
    assert {r.seed for r in some if r.name == "gt-gpt2-strong"} == {0, 1, 2}
    assert {r.seed for r in some if r.name == "w2s-gpt2-weak-to-gpt2-strong-xent"} == {0, 1, 2}
    # 3 seeds x (2 gt + 1 pair) + seed 1's qwen2 gt and its 2 pairs
    assert len(some) == 3 * 3 + 3
    hashes = {r.key: r.plan.hash for r in every}
    assert all(hashes[r.key] == r.plan.hash for r in some)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["models"][1].update(seeds=[5]), "models.1.seeds: [5] is not a subset of the sweep's seeds [0, 1]"),
    (lambda c: c["models"].append(dict(c["models"][0])), "models.3: two models are both named 'gpt2-weak'"),
    (lambda c: c["models"][1].update(resources={"gpus": 4}), "models.1.resources.gpus: unknown key"),
    (lambda c: c.update(resources={"nodes": 0}), "resources.nodes: Input should be greater than 0"),
    (lambda c: c.update(models=[]), "models: Value error, give at least one entry in models"),
    (lambda c: c.update(losses=["xent", "nope"]), "losses.1.name: unknown loss 'nope'"),
    (lambda c: c.update(executor="pbs"), "executor: Input should be 'local' or 'slurm'"),
])
def test_config_errors_are_one_line(tmp_path, fake_models, edit, message):
    cfg = sweep_dict(tmp_path, fake_models, tmp_path / "d.jsonl")
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, cfg)
    assert message.replace("Value error, ", "") in str(err.value) and "\n" not in str(err.value)


def test_slurm_job_options_per_model(tmp_path, fake_models):
    cfg = sweep_dict(tmp_path, fake_models, tmp_path / "d.jsonl", n_models=2, seeds=[0],
                     executor="slurm",
                     resources={"time": "00:20:00", "partition": "gpu", "account": "w2s",
                                "sbatch": ["--qos=low"]})
    cfg["models"][1]["resources"] = {"nodes": 2, "gpus_per_node": 4, "cpus_per_task": 16,
                                     "launcher": "deepspeed", "time": "02:00:00", "sbatch": ["--exclusive"]}
    sweep = load(tmp_path, cfg)
    runs = {r.key: r for r in plan_sweep(sweep)}
    small, big = runs["jsonl/seed0/gt-gpt2-weak"], runs["jsonl/seed0/w2s-gpt2-weak-to-gpt2-strong-xent"]
    log = tmp_path / "x.%j.out"
    opts = ex.sbatch_options(sweep, small, log, ["--mail-type=FAIL"])
    assert {"--nodes=1", "--ntasks-per-node=1", "--time=00:20:00", "--partition=gpu", "--account=w2s",
            "--qos=low", "--mail-type=FAIL", "--signal=USR1@180", "--open-mode=append",
            f"--output={log}"} <= set(opts)
    assert not any(o.startswith("--gpus") for o in opts)
    opts = ex.sbatch_options(sweep, big, log)
    assert {"--nodes=2", "--gpus-per-node=4", "--cpus-per-task=16", "--time=02:00:00",
            "--partition=gpu", "--exclusive"} <= set(opts)
    assert ex.slurm_world_size(sweep, big) == 8 and ex.slurm_world_size(sweep, small) == 1
    args = ex.script_args(sweep, small, Path("/c.yaml"))
    assert args[:2] == ["--launcher=none", "--nproc-per-node=1"]
    assert args[args.index("--"):] == ["--", "run", "--config=/c.yaml", "--run-key=jsonl/seed0/gt-gpt2-weak"]
    assert ex.script_args(sweep, big, Path("/c.yaml"))[:2] == ["--launcher=deepspeed", "--nproc-per-node=4"]


def test_slurm_node_launcher_commands(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "launch"))
    import slurm_node

    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the node list is expanded by hand
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    port = 20000 + 4242
    cmd = slurm_node.launcher_command("torchrun", "c10d", 2, 1, 4, ["run", "--config=x"], tmp_path)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4",
                       "--rdzv_backend=c10d", f"--rdzv_endpoint=gpu07:{port}", "--rdzv_id=4242",
                       "--rdzv_conf=is_host=0", str(REPO / "launch" / "rank.py"), "run", "--config=x"]
    cmd = slurm_node.launcher_command("torchrun", "static", 2, 1, 4, ["run", "--run", "gt-x"], tmp_path)
    assert cmd[-3:] == ["run", "--run-key", "gt-x"]  # not --run: torchrun's --run-path
    assert {"--node_rank=1", "--master_addr=gpu07", f"--master_port={port}"} <= set(cmd)
    cmd = slurm_node.launcher_command("deepspeed", "c10d", 2, 0, 4, ["run"], tmp_path)
    assert {f"--hostfile={tmp_path / 'hostfile'}", "--no_ssh", "--node_rank=0",
            "--master_addr=gpu07", f"--master_port={port}"} <= set(cmd)
    assert (tmp_path / "hostfile").read_text() == "gpu07 slots=4\ngpu08 slots=4\n"
    with pytest.raises(SystemExit, match="one rank"):
        slurm_node.launcher_command("none", "c10d", 2, 0, 1, ["run"], tmp_path)
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
    monkeypatch.delenv("W2S_NPROC_PER_NODE", raising=False)
    assert slurm_node.ranks_per_node(None) == 8 and slurm_node.ranks_per_node(2) == 2


def test_status_says_what_failed_and_why(tmp_path, fake_models, monkeypatch):
    sweep = load(tmp_path, sweep_dict(tmp_path, fake_models, tmp_path / "d.jsonl", n_models=2,
                                      seeds=[0], losses=["xent"]))
    runs = {r.key: r for r in plan_sweep(sweep)}
    gt_w, gt_s = runs["jsonl/seed0/gt-gpt2-weak"], runs["jsonl/seed0/gt-gpt2-strong"]
    mark_done(gt_s)
    log = tmp_path / "gt-w.out"
    log.write_text("[w2s-job] job 11\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "torch.OutOfMemoryError: CUDA out of memory\nsrun: error: node1: task 0: Exited\n")
    book = ex.JobBook(sweep)
    book.put(gt_w, executor="slurm", job_id="11", log=str(log))
    book.put(runs["jsonl/seed0/w2s-gpt2-weak-to-gpt2-weak-xent"], executor="slurm", job_id="12", log="")
    book.put(runs["jsonl/seed0/w2s-gpt2-weak-to-gpt2-strong-xent"], executor="slurm", job_id="13", log="")
    book.put(runs["jsonl/seed0/w2s-gpt2-strong-to-gpt2-strong-xent"], executor="slurm", job_id="14", log="")
    fake = {"11": slurm.JobInfo("11", "FAILED", "NonZeroExitCode", 1, 0),
            "12": slurm.JobInfo("12", "CANCELLED", "DependencyNeverSatisfied", 0, 0),
            "13": slurm.JobInfo("13", "PENDING", "Dependency"),
            "14": slurm.JobInfo("14", "RUNNING")}
    monkeypatch.setattr(slurm, "job_states", lambda ids, env=None: {i: fake[i] for i in ids})
    by_key = {s.run.key: s for s in ex.sweep_status(sweep, list(runs.values()))}
    assert by_key["jsonl/seed0/gt-gpt2-strong"].state == "done"
    failed = by_key["jsonl/seed0/gt-gpt2-weak"]
    assert failed.state == "failed" and "exit code 1" in failed.detail
    assert "torch.OutOfMemoryError: CUDA out of memory" in failed.detail
    cancelled = by_key["jsonl/seed0/w2s-gpt2-weak-to-gpt2-weak-xent"]
    assert cancelled.state == "cancelled"
    assert "dependency jsonl/seed0/gt-gpt2-weak (job 11) failed" in cancelled.detail
    assert by_key["jsonl/seed0/w2s-gpt2-weak-to-gpt2-strong-xent"].state == "queued"
    assert by_key["jsonl/seed0/w2s-gpt2-strong-to-gpt2-strong-xent"].state == "running"
    text = ex.format_status(sweep, list(by_key.values()))
    assert "1 done, 1 running, 1 queued, 1 failed, 1 cancelled" in text
    assert "rerun `w2s sweep`" in text
    # a rerun resubmits the failed run and its cancelled dependant, not the live or done ones
    submitted = []

    def fake_submit(script, args, options, dependencies=(), env=None):
        submitted.append((next(a for a in args if a.startswith("--run-key")), list(dependencies)))
        return str(100 + len(submitted))

    monkeypatch.setattr(slurm, "submit", fake_submit)
    ex.submit_slurm(sweep, list(runs.values()), report_job=False)
    assert submitted == [("--run-key=jsonl/seed0/gt-gpt2-weak", []),
                         ("--run-key=jsonl/seed0/w2s-gpt2-weak-to-gpt2-weak-xent", ["101"])]


def write_fake_run(run, correct: np.ndarray, labels: np.ndarray) -> None:
    """A finished run whose test predictions are right exactly where `correct` says."""
    run.plan.dir.mkdir(parents=True, exist_ok=True)
    p1 = np.where(correct, labels, 1 - labels) * 0.8 + 0.1
    (run.plan.dir / "test_predictions.jsonl").write_text("".join(
        json.dumps({"id": f"t{i}", "p1": float(p), "label": int(y)}) + "\n" for i, (p, y) in enumerate(zip(p1, labels))))
    (run.plan.dir / "metrics.json").write_text(json.dumps({"accuracy": float(correct.mean()), "auc": 0.5,
                                                           "n_test": len(labels)}))
    mark_done(run)


def test_report_tables_and_plots(tmp_path, fake_models, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = sweep_dict(tmp_path, fake_models, tmp_path / "d.jsonl", n_models=3, losses=["xent"])
    cfg["tracking"] = {"wandb": "offline", "progress": False}
    sweep = load(tmp_path, cfg)
    runs = plan_sweep(sweep)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    acc = {"gpt2-weak": 0.6, "gpt2-strong": 0.7, "qwen2": 0.8}
    for run in runs:
        strong = run.plan.model.short_name
        base = acc[strong] if run.plan.kind == "gt" else (acc[run.plan.weak.model.short_name] + acc[strong]) / 2
        write_fake_run(run, rng.random(400) < base + 0.02 * run.seed, labels)
    from w2s_scale.scaling import report

    out = report(sweep, runs)
    gt_mean = {r["model"]: r for r in out["gt"] if r["seed"] == "mean"}
    assert set(gt_mean) == set(acc) and all(r["n_seeds"] == 2 and r["accuracy_ci95"] for r in gt_mean.values())
    per_seed = [r for r in out["transfer"] if r["seed"] != "mean"]
    assert len(per_seed) == 2 * 6 and all(r["dataset"] == "jsonl" for r in per_seed)
    for row in per_seed:  # PGR from the three runs' accuracies on the same examples
        if row["weak"] != row["strong"]:
            expected = (row["transfer_acc"] - row["weak_acc"]) / (row["ceiling_acc"] - row["weak_acc"])
            assert row["pgr"] == pytest.approx(expected)
        else:
            assert row["pgr"] is None  # weak == strong: the ceiling does not beat the floor
    gt_by = {(r["model"], r["seed"]): r["accuracy"] for r in out["gt"]}
    row = next(r for r in per_seed if (r["weak"], r["strong"], r["seed"]) == ("gpt2-weak", "qwen2", 1))
    assert row["weak_acc"] == pytest.approx(gt_by[("gpt2-weak", 1)])
    assert row["ceiling_acc"] == pytest.approx(gt_by[("qwen2", 1)])
    means = [r for r in out["transfer"] if r["seed"] == "mean"]
    assert len(means) == 6 and all(r["n_seeds"] == 2 for r in means)
    text = (tmp_path / "results/sweep/summary.txt").read_text()
    assert "undefined (ceiling <= weak)" in text and "mean of 2" in text and "+-" in text
    # the model folders do not exist here, so no parameter counts: no figures (tests/test_figures.py
    # draws them from real tiny models), but the curve points with their intervals are written
    assert out["plots"] == [] and (tmp_path / "results/sweep/scaling_points.csv").exists()
    assert json.loads((tmp_path / "results/sweep/summary.json").read_text())[0]["dataset"] == "jsonl"
    assert list((tmp_path / "results/sweep/wandb").glob("offline-run-*"))  # logged for W&B


def test_run_refuses_transfer_before_its_teacher(tmp_path, tiny_models, tiny_data):
    cfg = write_config(tmp_path / "s.yaml", sweep_dict(tmp_path, tiny_models, tiny_data, n_models=2))
    proc = run_w2s(["run", "-c", str(cfg), "--run", "w2s-gpt2-weak-to-gpt2-strong-xent", "--seed", "0"])
    assert proc.returncode == 2
    assert "has not finished; run it first" in proc.stderr, proc.stderr[-2000:]


def test_local_sweep_runs_in_parallel_each_after_the_run_it_reads(tmp_path, tiny_models, tiny_data):
    """launch.parallel 2 (--parallel): two runs at once, a transfer run only once its weak
    model's gt run is done, every run done once; the children's output goes to their logs."""
    cfg = sweep_dict(tmp_path, tiny_models, tiny_data, n_models=2, seeds=[0], losses=["xent"],
                     self_transfer=False)
    cfg["train"]["zero_stage"] = 0
    path = write_config(tmp_path / "s.yaml", cfg)
    proc = run_w2s(["sweep", "-c", str(path), "--parallel", "2"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(seed 0): test accuracy" not in proc.stdout  # the runs' own lines: in their logs only
    seed_dir = tmp_path / "results/sweep/jsonl/seed0"
    spans = {}
    for run_dir in seed_dir.iterdir():
        events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        times = {e["event"]: e["time"] for e in events}
        spans[run_dir.name] = (times["start"], times["done"])
        assert [e["event"] for e in events].count("start") == 1
    assert len(spans) == 3  # 2 gt, 1 transfer
    gt_weak, gt_strong = spans["gt-gpt2-weak"], spans["gt-gpt2-strong"]
    assert gt_weak[0] < gt_strong[1] and gt_strong[0] < gt_weak[1]  # ran at the same time
    for name, (start, _) in spans.items():
        if name.startswith("w2s-gpt2-weak-"):
            assert start > gt_weak[1], name
        elif name.startswith("w2s-gpt2-strong-"):
            assert start > gt_strong[1], name
    book = json.loads((tmp_path / "results/sweep/sweep/jobs.json").read_text())["data"]  # sealed
    assert {e["status"] for e in book.values()} == {"done"} and len(book) == 3
    assert "gt-gpt2-weak (seed 0): test accuracy" in (
        tmp_path / "results/sweep/sweep/logs/jsonl.seed0.gt-gpt2-weak.log").read_text()


def test_a_stop_signal_to_the_sweep_stops_its_runs_which_the_same_command_resumes(
        tmp_path, tiny_models, tiny_data):
    """`kill PID` of a local sweep (SIGTERM to the sweep alone) reaches the runs it started:
    each checkpoints and exits, none runs on unwatched, and the same command resumes them."""
    cfg = sweep_dict(tmp_path, tiny_models, tiny_data, n_models=1, seeds=[0], losses=["xent"])
    cfg["train"].update(zero_stage=0, epochs=8)  # 80 steps: still training when signalled
    path = write_config(tmp_path / "s.yaml", cfg)
    args = ["sweep", "-c", str(path), "--parallel", "2"]
    proc = start_w2s(args, tmp_path / "stopped.log")
    seed_dir = tmp_path / "results/sweep/jsonl/seed0"
    logs = [seed_dir / "gt-gpt2-weak/log.jsonl"]  # the transfer run waits for it
    deadline = time.time() + 600
    while not any(log.exists() and '"event": "train"' in log.read_text() for log in logs):
        assert time.time() < deadline and proc.poll() is None, (tmp_path / "stopped.log").read_text()[-3000:]
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)  # the sweep's process only, as `kill PID` does
    code, out = finish(proc, tmp_path / "stopped.log", timeout=600)
    assert code == 1 and "stopped by a signal; run the same command again to resume" in out, out[-3000:]
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "results")], capture_output=True, text=True)
    assert left.returncode == 1, left.stdout  # no run of it is still going
    # a run that was training checkpointed and stopped (one still loading when the signal came
    # had nothing to save and simply ended; the rerun starts it)
    stopped = [log for log in logs if log.exists() and '"event": "train"' in log.read_text()
               and not (log.parent / "DONE").exists()]
    assert stopped and all((log.parent / "checkpoints/latest_step").exists() for log in stopped)
    assert not list(seed_dir.glob("w2s-*/DONE"))  # nothing started after the signal
    again = run_w2s(args, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for log in stopped:
        events = [json.loads(line) for line in log.read_text().splitlines()]
        assert [e["event"] for e in events].count("resumed") == 1
        steps = [e["step"] for e in events if e["event"] == "train"]
        assert steps.count(1) == 1 and steps[-1] == 80  # resumed, never restarted from scratch


def test_local_sweep_runs_each_run_once_then_reuses(tmp_path, tiny_models, tiny_data):
    """The local executor: each run in its own process (1 rank), dependencies first, summary
    and plots at the end; a second invocation reuses everything."""
    cfg = sweep_dict(tmp_path, tiny_models, tiny_data, n_models=1, seeds=[0], losses=["xent"])
    cfg["train"]["zero_stage"] = 0
    path = write_config(tmp_path / "s.yaml", cfg)
    proc = run_w2s(["sweep", "-c", str(path)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "executor local: 0 reused (done), 2 to run" in proc.stdout
    assert proc.stdout.index("gt-gpt2-weak (seed 0): test accuracy") < proc.stdout.index(
        "w2s-gpt2-weak-to-gpt2-weak-xent (seed 0): starting")
    out = tmp_path / "results" / "sweep"
    assert (out / "figures" / "jsonl-xent.png").exists() and (out / "summary.csv").exists()
    book = json.loads((out / "sweep" / "jobs.json").read_text())["data"]  # sealed
    assert {e["status"] for e in book.values()} == {"done"}
    again = run_w2s(["sweep", "-c", str(path)])
    assert again.returncode == 0 and "2 reused (done), 0 to run" in again.stdout
    assert "starting" not in again.stdout
    status = run_w2s(["status", "-c", str(path)])
    assert status.returncode == 0 and "2 done" in status.stdout


def test_parallel_runs_split_the_gpus_and_threads_or_say_what_is_missing(monkeypatch):
    """launch.parallel: each slot gets its own nproc GPUs of CUDA_VISIBLE_DEVICES and its share
    of the CPU threads; too few GPUs listed is a config error before anything starts."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(ex.os, "cpu_count", lambda: 8)
    assert [ex._slot_env(slot, 2, 2)["CUDA_VISIBLE_DEVICES"] for slot in (0, 1)] == ["0,1", "2,3"]
    assert ex._slot_env(1, 2, 2)["OMP_NUM_THREADS"] == "2"
    assert ex._slot_env(0, 1, 2)["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"  # one at a time: as given
    ex.check_parallel(2, 2)
    with pytest.raises(ConfigError, match=r"launch.parallel: 4 runs of 2 rank\(s\) need 8 GPUs, "
                                          r"but CUDA_VISIBLE_DEVICES lists 4"):
        ex.check_parallel(4, 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
    assert ex._slot_env(0, 2, 1)["OMP_NUM_THREADS"] == "3"
