"""Carrying out a sweep's plan: locally (one run after another) or as Slurm jobs chained with
`--dependency=afterok`; and saying where every run stands.

Each run is its own process, `w2s run --config <snapshot> --run <key>`, whichever executor starts
it. The config is snapshotted (resolved, overrides applied) under results/<name>/sweep/ when the
sweep is started, so queued jobs run what was planned even if the YAML is edited meanwhile. What
was started is recorded in results/<name>/sweep/jobs.json (job id or local exit code, log file),
which `w2s status` reads and a rerun of `w2s sweep` consults to submit only what is missing.
Both are checked before they are read: a snapshot is named by the hash of its content, and the
job book carries its own SHA-256 (integrity.seal); a damaged one is named in one line and
rewritten (a snapshot) or started afresh (the book: the runs' DONE records decide what is done;
a job still running that the book forgot is kept from training twice by the run's lock).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import yaml

from w2s_scale import costs, integrity, packing, slurm
from w2s_scale.catalogue import lookup
from w2s_scale.config import Resources, SweepConfig
from w2s_scale.errors import ConfigError
from w2s_scale.preflight import preflight_runs
from w2s_scale.processes import handling
from w2s_scale.files import atomic_write
from w2s_scale.sweep import SweepRun, damage, describe, disk_state, resources_text, sweep_dir

REPO = Path(__file__).resolve().parent.parent
RUN_SCRIPT = REPO / "slurm" / "run.sbatch"
PACK_SCRIPT = REPO / "slurm" / "pack.sbatch"  # several runs of one job, one after another
REPORT_SCRIPT = REPO / "slurm" / "report.sbatch"


def say(message: str) -> None:
    print(f"[w2s] {message}", flush=True)


# --- shared by both executors --------------------------------------------------------------------

def snapshot(cfg: SweepConfig) -> Path:
    """The resolved config, written once per distinct content; runs are started from it."""
    # only what was set: catalogue defaults apply to the fields a config leaves unset, so
    # writing the defaults out would change what a reloaded config means (and its run hashes)
    text = yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True), sort_keys=False)
    path = sweep_dir(cfg) / "sweep" / f"config.{integrity.text_hash(text)}.yaml"
    if path.exists() and integrity.text_hash(path.read_text(errors="replace")) != path.name.split(".")[1]:
        say(f"{path}: changed since it was written (its name is the hash of its content); "
            f"written again")
        atomic_write(path, text)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    return path.resolve()


class JobBook:
    """results/<name>/sweep/jobs.json: the last attempt of each run (by key)."""

    def __init__(self, cfg: SweepConfig):
        self.path = sweep_dir(cfg) / "sweep" / "jobs.json"
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            entries, problem = integrity.unseal(self.path.read_text(errors="replace"))
            if problem is None and not (isinstance(entries, dict)
                                        and all(isinstance(e, dict) for e in entries.values())):
                problem = "not a mapping of run keys to job entries"
            if problem is not None:
                say(f"{self.path}: {problem}; not trusted, starting a new job book (what is done "
                    f"is read from the runs' DONE records)")
            else:
                self.entries = entries

    def get(self, run: SweepRun) -> Optional[dict]:
        entry = self.entries.get(run.key)
        return entry if entry and entry.get("hash") == run.plan.hash else None  # else: other settings

    def put(self, run: SweepRun, **entry) -> None:
        self.entries[run.key] = {"hash": run.plan.hash, "time": round(time.time()), **entry}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, integrity.seal(self.entries))


def log_path(cfg: SweepConfig, run: SweepRun, suffix: str) -> Path:
    return (sweep_dir(cfg) / "sweep" / "logs" / f"{run.key.replace('/', '.')}.{suffix}").resolve()


def ranks_per_node(cfg: SweepConfig, res: Resources) -> int:
    return res.ranks_per_node or res.gpus_per_node or cfg.launch.nproc


def slurm_world_size(cfg: SweepConfig, run: SweepRun) -> int:
    return run.resources.nodes * ranks_per_node(cfg, run.resources)


def preflight(cfg: SweepConfig, runs: list[SweepRun], world_size, local: bool = True) -> None:
    """What can fail on bad input, before anything starts (see w2s_scale/preflight.py)."""
    preflight_runs(cfg, runs, world_size, local)


def run_command(config: Path, run: SweepRun, redo: bool = False) -> list[str]:
    """The w2s arguments that carry out one run (each rank runs them)."""
    # --run-key, not --run: the launchers' parsers would take --run for their --run-path
    return ["run", f"--config={config}", f"--run-key={run.key}"] + (["--redo"] if redo else [])


# --- local ---------------------------------------------------------------------------------------

class RunProcesses:
    """The runs the local executor has started. A stop signal sent to the sweep alone (`kill
    PID`: SIGTERM, or SIGUSR1) reaches them too, so each checkpoints and exits 75 instead of
    running on unwatched after the sweep has gone; the sweep then starts nothing more."""

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self):
        self.procs: set[subprocess.Popen] = set()
        self.signalled = False
        self._handlers = handling(self.SIGNALS, self._forward)

    def __enter__(self) -> "RunProcesses":
        self._handlers.__enter__()
        return self

    def _forward(self, signum, _frame) -> None:
        # a signal sent to the whole process group reaches a run twice: it only sets a flag
        self.signalled = True
        for proc in list(self.procs):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    def __exit__(self, *exc) -> None:
        self._handlers.__exit__(*exc)


def _tee(cmd: list[str], log: Path, children: RunProcesses) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        children.procs.add(proc)
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
        code = proc.wait()
        children.procs.discard(proc)
        return code


def _start_logged(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    """A run started beside others: its output goes to its log alone (interleaved progress lines
    of several runs on one terminal would be unreadable)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def _listed_gpus() -> list[str]:
    return [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]


def _slot_env(slot: int, parallel: int, nproc: int) -> dict:
    """The environment of a run in `slot` of `parallel`: an equal share of the CPU threads (one
    process per core is the limit past which OpenMP threads spin against each other), and, when
    CUDA_VISIBLE_DEVICES lists the GPUs, `nproc` of them for this slot alone."""
    env = dict(os.environ)
    if parallel == 1:
        return env
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // (parallel * nproc)))
    gpus = _listed_gpus()
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[slot * nproc:(slot + 1) * nproc])
    return env


def check_parallel(parallel: int, nproc: int) -> None:
    gpus = _listed_gpus()
    if parallel > 1 and gpus and len(gpus) < parallel * nproc:
        raise ConfigError(f"launch.parallel: {parallel} runs of {nproc} rank(s) need "
                          f"{parallel * nproc} GPUs, but CUDA_VISIBLE_DEVICES lists {len(gpus)}; "
                          f"lower launch.parallel (--parallel) or list more GPUs")


def execute_local(cfg: SweepConfig, runs: list[SweepRun], launcher: str, nproc: int,
                  redo: bool = False, parallel: int = 1) -> int:
    """Every missing run (every run with `redo`: each replaces its complete predecessor only
    once it is complete itself), each in its own process under `launcher` with `nproc` ranks,
    up to `parallel` at once, a run starting once the runs it reads are done; a run whose
    dependency failed is skipped. Returns the number not done."""
    config = snapshot(cfg)
    book = JobBook(cfg)
    failed: set[str] = set()
    waiting = list(runs)  # in plan order: dependencies first
    running: dict[str, tuple[SweepRun, subprocess.Popen, Path, int]] = {}
    stopped = False  # a run stopped by a signal (exit 75): start nothing more
    children = RunProcesses()

    def start_ready() -> bool:
        """Start (parallel 1: carry out) what can start now; whether anything changed."""
        nonlocal stopped
        changed = False
        for run in list(waiting):
            if stopped or children.signalled or len(running) >= parallel:
                break
            state = disk_state(run)
            if state == "done" and not redo:
                waiting.remove(run)
                changed = True
                continue
            if state == "conflict" and not redo:
                say(f"{run.key}: finished earlier with other settings; change `name` or `results_dir`, "
                    f"or pass --redo to replace it")
                failed.add(run.key)
                waiting.remove(run)
                changed = True
                continue
            bad = [d for d in run.deps if d in failed]
            if bad:
                say(f"{run.key}: skipped, it needs {bad[0]}, which failed")
                book.put(run, executor="local", status="skipped", reason=f"dependency {bad[0]} failed")
                failed.add(run.key)
                waiting.remove(run)
                changed = True
                continue
            if any(d in running or d in {w.key for w in waiting} for d in run.deps):
                continue  # the run it reads is still to finish
            waiting.remove(run)
            changed = True
            log = log_path(cfg, run, "log")
            cmd = [sys.executable, "-m", "w2s_scale.cli", *run_command(config, run, redo),
                   f"--launcher={launcher}", f"--nproc={nproc}"]
            say(f"{run.key}: {'resuming' if state == 'partial' else 'starting'} "
                f"({nproc} rank(s), {launcher}; log {log})")
            book.put(run, executor="local", status="running", log=str(log), pid=os.getpid())
            if parallel == 1:  # one at a time, its output on the terminal too
                stopped = _finish_local(book, run, _tee(cmd, log, children), log, failed) == 75
                continue
            slot = min(set(range(parallel)) - {s for *_, s in running.values()})
            proc = _start_logged(cmd, log, _slot_env(slot, parallel, nproc))
            children.procs.add(proc)
            running[run.key] = (run, proc, log, slot)
        return changed

    def reap() -> None:
        nonlocal stopped
        for key, (run, proc, log, _) in list(running.items()):
            if proc.poll() is not None:
                del running[key]
                children.procs.discard(proc)
                stopped = _finish_local(book, run, proc.returncode, log, failed) == 75 or stopped
                if proc.returncode == 0 and key not in failed:
                    say(f"{key}: done ({len(running)} running, {len(waiting)} waiting)")

    with children:
        while True:
            changed = start_ready()
            if not running:
                if stopped or children.signalled or not waiting or not changed:
                    break  # done, stopped, or what is left waits on runs that will not finish
                continue
            time.sleep(0.5)
            reap()
    stopped = stopped or children.signalled
    if stopped:  # the runs got the signal too; rerunning resumes them
        say("stopped by a signal; run the same command again to resume")
    return sum(disk_state(r) != "done" for r in runs)


def _finish_local(book: JobBook, run: SweepRun, rc: int, log: Path, failed: set[str]) -> int:
    if rc == 0 and disk_state(run) == "done":
        book.put(run, executor="local", status="done", rc=0, log=str(log))
    else:
        book.put(run, executor="local", status="failed", rc=rc, log=str(log))
        failed.add(run.key)
        say(f"{run.key}: failed (exit code {rc}); see {log}")
    return rc


# --- Slurm ---------------------------------------------------------------------------------------

def node_launcher(cfg: SweepConfig, run: SweepRun) -> str:
    return run.resources.launcher or ("none" if slurm_world_size(cfg, run) == 1 else "torchrun")


def sbatch_options(cfg: SweepConfig, run: SweepRun, log: Path, extra: Iterable[str] = (),
                   time: Optional[str] = None, name: Optional[str] = None) -> list[str]:
    """`time`: the job's limit (packing.slurm_time); None: resources.time as written, or the cap
    (max_job_time) where it is `auto`."""
    res = run.resources
    time = time or (res.time if res.time != packing.AUTO else res.max_job_time)
    opts = [f"--job-name=w2s-{cfg.name}-{(name or run.key).replace('/', '-')}", f"--nodes={res.nodes}",
            "--ntasks-per-node=1", f"--time={time}", f"--output={log}", "--open-mode=append"]
    if res.signal_before_s:
        opts.append(f"--signal=USR1@{res.signal_before_s}")
    if res.gpus_per_node:
        opts.append(f"--gpus-per-node={res.gpus_per_node}")
    for flag, value in (("--cpus-per-task", res.cpus_per_task), ("--mem", res.mem),
                        ("--partition", res.partition), ("--account", res.account)):
        if value:
            opts.append(f"{flag}={value}")
    return opts + list(res.sbatch) + list(extra)


def launcher_args(cfg: SweepConfig, run: SweepRun) -> list[str]:
    return [f"--launcher={node_launcher(cfg, run)}",
            f"--nproc-per-node={ranks_per_node(cfg, run.resources)}", f"--rdzv={run.resources.rdzv}"]


def script_args(cfg: SweepConfig, run: SweepRun, config: Path, redo: bool = False) -> list[str]:
    return [*launcher_args(cfg, run), "--", *run_command(config, run, redo)]


def pack_args(cfg: SweepConfig, runs: list[SweepRun], config: Path, redo: bool = False) -> list[str]:
    """slurm/pack.sbatch's arguments: the launcher's, then the log folder (each run logs to
    <folder>/<key with . for />.<job id>.out, as log_path names it), the config and the keys."""
    logs = log_path(cfg, runs[0], "x").parent
    return [*launcher_args(cfg, runs[0]), "--", str(logs), str(config), *(["--redo"] if redo else []),
            *(run.key for run in runs)]


def run_estimates(cfg: SweepConfig, runs: list[SweepRun]) -> dict[str, Optional[float]]:
    """Each run's estimated wall seconds (costs.py), None where there is none; estimated only
    where a limit is derived from it (resources.time auto)."""
    auto = [r for r in runs if r.resources.time == packing.AUTO and lookup(r.plan.model.name)]
    out: dict[str, Optional[float]] = {r.key: None for r in runs}
    if auto:
        for cost in costs.sweep_costs(cfg, auto):
            out[cost.key] = None if cost.wall_hours is None else cost.wall_hours * 3600.0
    return out


def submit_env() -> dict[str, str]:
    """The environment sbatch exports to the jobs: where the repository and Python are."""
    env = dict(os.environ)
    env.setdefault("W2S_HOME", str(REPO))
    env.setdefault("W2S_PYTHON", sys.executable)
    return env


def _shell(cmd: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in cmd)


def submit_slurm(cfg: SweepConfig, runs: list[SweepRun], extra: Iterable[str] = (),
                 dry_run: bool = False, report_job: bool = True, redo: bool = False) -> dict[str, str]:
    """Submit every run that is neither done nor queued/running, packed into jobs (packing.py),
    each job depending (afterok) on the jobs of the runs it reads that are not done yet. Returns
    {run key: job id} of the runs that have a live or new job. Dry run: prints the job count and
    the sbatch commands instead (new jobs' ids as <job N>)."""
    config = snapshot(cfg) if not dry_run else Path("<snapshot of the config>")
    book = JobBook(cfg)
    env = submit_env()
    recorded = {run.key: book.get(run) for run in runs}
    live_ids = [e["job_id"] for e in recorded.values() if e and e.get("executor") == "slurm"]
    infos = slurm.job_states(live_ids, env=env) if live_ids and not dry_run else {}
    by_key = {r.key: r for r in runs}
    live: dict[str, str] = {}
    todo: list[SweepRun] = []
    for run in runs:
        state = disk_state(run)
        if state == "done" and not redo:
            continue
        if state == "conflict" and not redo:
            say(f"{run.key}: finished earlier with other settings; not submitted (--redo replaces it)")
            continue
        entry = recorded[run.key]
        if entry and entry.get("executor") == "slurm":
            info = infos.get(entry["job_id"])
            if info is not None and not info.finished and info.state != "UNKNOWN":
                live[run.key] = entry["job_id"]
                continue
        planned = {r.key for r in todo}
        missing_deps = [d for d in run.deps if d not in live and d not in planned
                        and disk_state(by_key[d]) != "done"]
        if missing_deps:
            say(f"{run.key}: not submitted, its dependency {missing_deps[0]} cannot run")
            continue
        todo.append(run)
    jobs = packing.plan_jobs(todo, run_estimates(cfg, todo))
    if dry_run:
        print(packing.summary(jobs))
    ids: list[str] = []
    job_of = dict(live)
    for n, job in enumerate(jobs):
        deps = sorted({live[d] for run in job.runs for d in run.deps if d in live})
        deps += [ids[i] for i in sorted(job.after)]
        first, time = job.runs[0], packing.slurm_time(job.limit_s)
        if job.packed:
            script, args = PACK_SCRIPT, pack_args(cfg, job.runs, config, redo)
            log = (sweep_dir(cfg) / "sweep" / "logs" / "pack.%j.out").resolve()
            options = sbatch_options(cfg, first, log, extra, time,
                                     name=f"{first.key}-and-{len(job.runs) - 1}-more")
        else:
            script, args = RUN_SCRIPT, script_args(cfg, first, config, redo)
            log = log_path(cfg, first, "%j.out")
            options = sbatch_options(cfg, first, log, extra, time)
        if dry_run:
            dep = f" --dependency=afterok:{':'.join(deps)} --kill-on-invalid-dep=yes" if deps else ""
            print(f"  sbatch {_shell(options)}{dep} {script.relative_to(REPO)} {_shell(args)}")
            ids.append(f"<job{n + 1}>")
            continue
        log.parent.mkdir(parents=True, exist_ok=True)
        job_id = slurm.submit(script, args, options, deps, env=env)
        ids.append(job_id)
        for position, run in enumerate(job.runs, 1):
            job_of[run.key] = job_id
            where = {"pack": len(job.runs), "position": position} if job.packed else {}
            book.put(run, executor="slurm", job_id=job_id, deps=deps, time=time,
                     log=str(log_path(cfg, run, f"{job_id}.out") if job.packed else log).replace("%j", job_id),
                     world_size=slurm_world_size(cfg, run), **where)
        after = f" after {', '.join(deps)}" if deps else ""
        if job.packed:
            say(f"job {job_id}: {len(job.runs)} runs, limit {time}{after}")
            for run in job.runs:
                say(f"{run.key}: job {job_id} (packed)")
        else:
            say(f"{first.key}: job {job_id}{after}")
    if jobs and not dry_run:
        say(packing.summary(jobs))
    new = ids if not dry_run else []
    if report_job and new:
        res = cfg.resources
        options = [f"--job-name=w2s-{cfg.name}-report", "--nodes=1", "--ntasks=1", "--time=00:30:00",
                   f"--output={(sweep_dir(cfg) / 'sweep' / 'logs' / 'report.%j.out').resolve()}",
                   f"--dependency=afterany:{':'.join(dict.fromkeys(job_of.values()))}"]
        options += [f"--{k}={v}" for k, v in (("partition", res.partition), ("account", res.account)) if v]
        job_id = slurm.submit(REPORT_SCRIPT, ["--config", str(config)], options, env=env)
        say(f"summary and plots: job {job_id}, when all runs have ended")
    return job_of


def wait_slurm(job_ids: Iterable[str], poll_s: float = 2.0, timeout_s: Optional[float] = None) -> None:
    ids = list(job_ids)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while ids:
        infos = slurm.job_states(ids)
        ids = [j for j, info in infos.items() if not info.finished and info.state != "UNKNOWN"]
        if not ids:
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"jobs {', '.join(ids)} still running after {timeout_s:.0f} s")
        time.sleep(poll_s)


# --- status --------------------------------------------------------------------------------------

@dataclass
class RunStatus:
    run: SweepRun
    state: str      # done, queued, running, failed, cancelled, stopped, partial, not started, conflict
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.state in ("failed", "cancelled", "conflict")


_NOISE = re.compile(r"^(\[w2s-|\[w2s\]|srun: |slurmstepd|\[\d{4}-\d\d-\d\d .*\] \[(INFO|WARNING)\])")


def why(log: Optional[str], limit: int = 200) -> str:
    """The most telling line of a failed run's log: w2s's own error message, else the last
    line of the last traceback, else the last line that is not launcher chatter."""
    if not log or not Path(log).exists():
        return "no log"
    lines = [line.rstrip() for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("w2s: error:"):
            return line[len("w2s: error:"):].strip()[:limit]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback"):
            tail = [ln for ln in lines[i + 1:] if not ln.startswith((" ", "\t")) and not _NOISE.match(ln)]
            if tail:
                return tail[0][:limit]
    quiet = [line for line in lines if not _NOISE.match(line)]
    return (quiet[-1] if quiet else (lines[-1] if lines else "empty log"))[:limit]


def sweep_status(cfg: SweepConfig, runs: list[SweepRun]) -> list[RunStatus]:
    book = JobBook(cfg)
    entries = {r.key: book.get(r) for r in runs}
    ids = [e["job_id"] for e in entries.values() if e and e.get("executor") == "slurm"]
    infos = slurm.job_states(ids) if ids else {}
    by_key = {r.key: r for r in runs}
    out: list[RunStatus] = []
    for run in runs:
        state = disk_state(run)
        entry = entries[run.key]
        if state == "done":
            out.append(RunStatus(run, "done"))
            continue
        if state == "damaged":
            out.append(RunStatus(run, "damaged", f"{run.plan.dir}: {damage(run)}; not trusted, "
                                                 f"rerun the sweep to redo it"))
            continue
        if state == "conflict":
            out.append(RunStatus(run, "conflict", f"{run.plan.dir} holds a run finished with other "
                                                  f"settings; change `name` or `results_dir`, or pass --redo"))
            continue
        resume = " (resumes from its checkpoint)" if state == "partial" else ""
        if entry is None:
            out.append(RunStatus(run, "partial" if state == "partial" else "not started",
                                 "not submitted" + resume))
        elif entry.get("executor") == "local":
            if entry.get("status") == "skipped":
                out.append(RunStatus(run, "cancelled", entry.get("reason", "")))
            elif entry.get("status") == "running" and _alive(entry.get("pid")):
                out.append(RunStatus(run, "running", f"locally, log {entry.get('log')}"))
            elif entry.get("status") == "running":
                out.append(RunStatus(run, "failed", f"the local sweep running it is gone: "
                                                    f"{why(entry.get('log'))}{resume}"))
            else:
                out.append(RunStatus(run, "failed", f"exit code {entry.get('rc')}: "
                                                    f"{why(entry.get('log'))}{resume}"))
        else:
            out.append(_slurm_status(run, entry, infos.get(entry["job_id"]), by_key, entries, infos, resume))
    return out


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def _slurm_status(run, entry, info, by_key, entries, infos, resume) -> RunStatus:
    job = entry["job_id"]
    if info is None or info.state == "UNKNOWN":
        return RunStatus(run, "failed", f"job {job} is no longer known to Slurm and left no result"
                                        f"{resume}; rerun the sweep to resubmit")
    if entry.get("pack"):
        packed = _packed_status(run, entry, info, by_key, resume)
        if packed is not None:
            return packed
    if not info.finished:
        if info.state == "PENDING":
            return RunStatus(run, "queued", f"job {job} pending ({info.reason or 'queued'})")
        return RunStatus(run, "running", f"job {job} {info.state.lower()}")
    if info.state == "CANCELLED" and info.reason == "DependencyNeverSatisfied" or (
            info.state == "CANCELLED" and _failed_dep(run, entries, infos)):
        dep = _failed_dep(run, entries, infos)
        return RunStatus(run, "cancelled", f"job {job} cancelled: its dependency "
                                           f"{dep or 'job'} failed")
    if info.state == "COMPLETED":
        return RunStatus(run, "failed", f"job {job} completed but left no DONE marker: "
                                        f"{why(entry.get('log'))}")
    if info.state == "TIMEOUT":
        return RunStatus(run, "failed", f"job {job} reached its time limit{resume}; raise "
                                        f"resources.time or rerun the sweep to resume")
    if info.exit_code == 75:
        return RunStatus(run, "failed", f"job {job} stopped by a signal after a checkpoint (exit 75) "
                                        f"and was not requeued; rerun the sweep to resume it")
    code = f" (exit code {info.exit_code})" if info.exit_code else ""
    return RunStatus(run, "failed" if info.state != "CANCELLED" else "cancelled",
                     f"job {job} {info.state.lower()}{code}: {why(entry.get('log'))}{resume}")


def _packed_status(run, entry, info, by_key, resume) -> Optional[RunStatus]:
    """A run sharing its job with others (slurm/pack.sbatch): where it stands in the job, read
    from its own log and the runs it reads; None where the job's state says it all."""
    job, where = entry["job_id"], f"run {entry.get('position')} of {entry['pack']} in job {entry['job_id']}"
    started = Path(entry.get("log") or "").is_file()
    if info.state == "PENDING":
        return RunStatus(run, "queued", f"{where}, pending ({info.reason or 'queued'}){resume}")
    if not info.finished:
        if started:
            return RunStatus(run, "running", f"{where}{resume}")
        return RunStatus(run, "queued", f"{where}, after the runs before it")
    if info.state != "COMPLETED":
        return None
    # a packed job ends with 0 whatever its runs did: each run is judged by itself
    unfinished = next((d for d in run.deps if disk_state(by_key[d]) != "done"), None)
    if unfinished is not None:
        return RunStatus(run, "cancelled", f"{where}: its dependency {unfinished} did not finish")
    if not started:
        return RunStatus(run, "failed", f"{where}: the job ended before it started; rerun the sweep")
    return RunStatus(run, "failed", f"{where}: {why(entry.get('log'))}{resume}")


def _failed_dep(run, entries, infos) -> Optional[str]:
    for dep in run.deps:
        entry = entries.get(dep)
        info = infos.get(entry["job_id"]) if entry and entry.get("executor") == "slurm" else None
        if info is not None and info.finished and not info.ok:
            return f"{dep} (job {entry['job_id']})"
    return None


def format_status(cfg: SweepConfig, statuses: list[RunStatus]) -> str:
    width = max(len(s.run.key) for s in statuses)
    lines = [describe(cfg, [s.run for s in statuses])]
    for s in statuses:
        lines.append(f"  {s.run.key.ljust(width)}  {s.state:<11} {s.detail}".rstrip())
    order = ["done", "running", "queued", "partial", "not started", "damaged", "failed", "cancelled",
             "conflict"]
    counts = {state: sum(s.state == state for s in statuses) for state in order}
    lines.append("  " + ", ".join(f"{n} {state}" for state, n in counts.items() if n))
    if any(s.state in ("failed", "cancelled", "not started", "partial", "damaged") for s in statuses):
        lines.append("  rerun `w2s sweep` with the same config to run/resubmit only what is missing")
    return "\n".join(lines)


def format_plan(cfg: SweepConfig, runs: list[SweepRun], executor: str, world_size) -> str:
    """The dry-run view: every run, what it needs, whether it is reused."""
    states = {r.key: disk_state(r) for r in runs}
    width = max(len(r.key) for r in runs)
    reused = sum(s == "done" for s in states.values())
    lines = [describe(cfg, runs),
             f"executor {executor}: {reused} reused (done), {len(runs) - reused} to run"]
    words = {"done": "reused", "partial": "resume", "missing": "run", "conflict": "CONFLICT",
             "damaged": "redo"}
    for run in runs:
        needs = ", ".join(f"{d} ({'done' if states[d] == 'done' else 'pending'})" for d in run.deps) or "-"
        where = resources_text(run.resources, world_size(run)) if executor == "slurm" else f"{world_size(run)} rank(s)"
        why = f" (damaged: {damage(run)})" if states[run.key] == "damaged" else ""
        lines.append(f"  {words[states[run.key]]:<8} {run.key.ljust(width)}  needs {needs}; {where}{why}")
    return "\n".join(lines)


def check_executor(executor: str) -> None:
    if executor == "slurm" and not any(
            os.access(os.path.join(p, "sbatch"), os.X_OK) for p in os.environ.get("PATH", "").split(os.pathsep)):
        raise ConfigError("executor: slurm needs the Slurm client tools (sbatch) on PATH; run on a "
                          "login node, or use --executor local")
