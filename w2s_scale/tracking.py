"""Run logs: a jsonl file always, W&B when asked, a progress bar; rank 0 only.

W&B online is checked before anything trains (`check_wandb`): an API key, and an answer from the
server within a few seconds. Without them `wandb.init` waits 100 s or more and then fails; here
the run logs offline instead (and says how to sync later) or stops, as tracking.on_no_network says.

One run folder is one W&B run: its id is kept in the folder (`wandb_run_id`), and a resumed
attempt (after a preemption) continues it (resume="allow"); training steps are W&B's steps, each
logged once, other events go to the run's summary. An attempt that was killed (not stopped at a
checkpoint) logged steps beyond its last checkpoint, which the next attempt trains again: the
steps W&B already holds (read from the earlier attempts' local W&B logs: a kill also loses the
last steps W&B had not written yet, so our own jsonl log cannot say) are not logged again (W&B
cannot take a step back offline, and its history would hold them twice); the jsonl log keeps
both attempts' records, after a "resumed" record.

Offline, W&B cannot resume a run: each attempt writes a folder of its own, which `wandb sync`
does not merge. When an attempt finishes its W&B run, the stage's attempts are merged into one
folder (wandb_log.merge_offline_attempts), and a finished offline run is never reopened
(`update_summary`: PGR stays in pgr.json and the report run), so each stage syncs as one run.
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from w2s_scale.errors import UserError
from w2s_scale import distributed as dist
from w2s_scale.config import TrackingConfig
from w2s_scale.files import atomic_write
from w2s_scale.hub import http_problem
from w2s_scale.wandb_log import MERGED_DIR, last_history_step, merge_offline_attempts

WANDB_CHECK_S = 5.0               # the longest the online check may take
DECIDED_MODE_ENV = "W2S_WANDB_MODE"  # the mode check_wandb settled on, inherited by the ranks
RUN_ID_FILE = "wandb_run_id"
# how long a resumed attempt waits for a killed attempt's W&B service to release the run id
RUN_ID_WAIT_S = 60.0


class TrackingError(UserError):
    """W&B online cannot work here and tracking.on_no_network is `error`."""


def _wandb_base_url() -> str:
    from wandb.sdk import wandb_setup

    try:  # WANDB_BASE_URL, wandb's settings files
        return str(wandb_setup.singleton().settings.base_url)
    except ValueError as err:  # a WANDB_* variable wandb rejects (pydantic's error is a ValueError)
        first = str(err).splitlines()
        raise TrackingError(f"tracking.wandb: W&B's settings cannot be read: "
                            f"{' '.join(first[1:3]).strip()[:200]}; fix the WANDB_* variable") from None


def _has_api_key(base_url: str) -> bool:
    """A key wandb itself would find: environment, ~/.netrc for this host, its settings."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib.wbauth import wbnetrc

    try:
        if wbnetrc.read_netrc_auth(host=base_url):
            return True
    except Exception:  # noqa: BLE001 - a malformed netrc entry is wandb's to report; no key here
        pass
    return bool(wandb_setup.singleton().settings.api_key)


def _server_problem(base_url: str, timeout_s: float) -> Optional[str]:
    """None if the W&B server answers an HTTP request within timeout_s, else why not."""
    return http_problem(base_url, timeout_s, "w2s-wandb-check")


def wandb_online_problem(timeout_s: float = WANDB_CHECK_S) -> Optional[str]:
    """Why W&B online would hang or fail here (no key, server unreachable), or None."""
    base_url = _wandb_base_url()
    if not _has_api_key(base_url):
        return f"no W&B API key for {base_url} (set WANDB_API_KEY or run `wandb login`)"
    problem = _server_problem(base_url, timeout_s)
    return None if problem is None else f"{base_url} cannot be reached ({problem})"


def check_wandb(cfg: TrackingConfig, sync_from: Path) -> str:
    """The W&B mode to run with: `cfg.wandb`, except that online with no key or no network
    becomes offline (one line saying how to sync the runs under `sync_from` later) or a
    TrackingError, as cfg.on_no_network says. Decided once per command: the ranks inherit it."""
    if cfg.wandb != "online":
        return cfg.wandb
    if os.environ.get(DECIDED_MODE_ENV):
        return os.environ[DECIDED_MODE_ENV]
    started = time.monotonic()
    problem = wandb_online_problem()
    mode = "online"
    if problem is not None:
        waited = time.monotonic() - started
        if cfg.on_no_network == "error":
            raise TrackingError(f"tracking.wandb: online, but {problem} after {waited:.1f} s; set "
                                f"tracking.wandb: offline, or tracking.on_no_network: offline to "
                                f"log offline and sync later")
        mode = "offline"
        print(f"w2s: W&B online is not possible: {problem} ({waited:.1f} s); logging offline "
              f"(tracking.on_no_network: offline); upload later with "
              f"`wandb sync {sync_from}/wandb/offline-run-*`", file=sys.stderr, flush=True)
    os.environ[DECIDED_MODE_ENV] = mode
    return mode


def own_wandb_service() -> None:
    """Start this process's own W&B service rather than one inherited from a parent.

    wandb puts its service's address in WANDB_SERVICE ("3-<pid of the process that started it>-...")
    and every child process inherits it. A run that used its parent's service (a sweep that
    resumed a run to add PGR, then launched runs; a test session) leaves its run id registered
    there when it is killed, and its resumed attempt is then refused ("run ID ... is in use")
    for as long as the parent lives. A run's own service dies with it and lets the id go."""
    token = os.environ.get("WANDB_SERVICE", "")
    parts = token.split("-")
    if token and (len(parts) < 2 or parts[1] != str(os.getpid())):
        del os.environ["WANDB_SERVICE"]


def stable_run_id(run_dir: Path) -> str:
    """This run folder's W&B run id, made once and kept in the folder, so every attempt of the
    run (resumed after a preemption) logs into the same W&B run; a redo (a new folder) gets its
    own. Rank 0 only."""
    path = run_dir / RUN_ID_FILE
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:16]
    atomic_write(path, run_id + "\n")
    return run_id


class _NoBar:
    def update(self, n: int = 1, **postfix: float) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar:
    def __init__(self, total: int, initial: int, desc: str):
        from tqdm import tqdm

        # in a terminal the bar redraws every second; in a log file (Slurm) every 30 s
        self._bar = tqdm(total=total, initial=initial, desc=desc, file=sys.stderr,
                         dynamic_ncols=True, leave=False,
                         mininterval=1.0 if sys.stderr.isatty() else 30.0)

    def update(self, n: int = 1, **postfix: float) -> None:
        if postfix:
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


class Tracker:
    """One per run. Non-zero ranks hold a Tracker that does nothing, so call sites need no
    rank checks."""

    def __init__(self, log_path: Path, cfg: TrackingConfig, run_name: str, group: str,
                 config: Optional[dict[str, Any]] = None, wandb_dir: Optional[Path] = None):
        self.active = dist.is_main()
        self.cfg = cfg
        self.log_path = log_path
        self._wandb = None
        if not self.active:
            return
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = log_path.open("a")
        self._logged_to = 0  # the last training step W&B holds from earlier attempts
        self._offline: Optional[tuple[Path, str]] = None  # (wandb_dir, run id) when offline
        if cfg.wandb != "off":
            import wandb

            mode = check_wandb(cfg, log_path.parent)
            own_wandb_service()
            wandb_dir = wandb_dir or log_path.parent
            run_id = stable_run_id(log_path.parent)
            if mode == "offline":
                self._offline = (wandb_dir, run_id)
            # after a kill, the killed attempt's W&B service can outlive it for a few seconds,
            # still holding the run id and flushing its last steps: wait for it to let go, and
            # read the last logged step only then
            deadline = time.monotonic() + RUN_ID_WAIT_S
            while True:
                self._logged_to = last_history_step(wandb_dir, run_id)
                try:
                    self._wandb = wandb.init(project=cfg.project, entity=cfg.entity, mode=mode,
                                             group=group, name=run_name, job_type=run_name.split("-")[0],
                                             config=config or {}, dir=str(wandb_dir), id=run_id,
                                             resume="allow", reinit="finish_previous")
                    break
                except Exception as err:  # noqa: BLE001 - wandb's service error has no public type
                    if "is in use" not in str(err) or time.monotonic() > deadline:
                        raise
                    time.sleep(2.0)

    def log(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        record = {"time": round(time.time(), 3), **record}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._wandb is not None:
            event = record.get("event", "log")
            numbers = {f"{event}/{k}": v for k, v in record.items()
                       if isinstance(v, (int, float)) and k != "time"}
            # the training step is W&B's step: each logged once, and a resumed attempt goes on
            # from the last one earlier attempts logged; "eval": curves on held-out slices of B
            if event in ("train", "eval"):
                if record["step"] > self._logged_to:
                    self._wandb.log(numbers, step=record["step"])
            elif numbers:  # start, resumed, stopped, predictions: no step of their own
                self._wandb.summary.update(numbers)

    def summary(self, values: dict[str, Any]) -> None:
        if self._wandb is not None:
            self._wandb.summary.update(values)

    def progress(self, total: int, desc: str, initial: int = 0):
        if self.active and self.cfg.progress:
            return _Bar(total, initial, desc)
        return _NoBar()

    def close(self) -> None:
        if not self.active:
            return
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
            if self._offline is not None:
                merge_attempts(*self._offline)


def merge_attempts(wandb_dir: Path, run_id: str) -> None:
    """One offline W&B run per stage: this stage's earlier attempts (stopped, killed) merged into
    one folder with this one (wandb_log.merge_offline_attempts). A merge that fails leaves the
    folders as they were and says so in one line: the run itself is complete."""
    try:
        merged = merge_offline_attempts(wandb_dir, run_id)
    except (OSError, ValueError) as err:
        print(f"w2s: warning: the offline W&B attempts of run {run_id} in {wandb_dir}/wandb were "
              f"not merged ({type(err).__name__}: {str(err)[:200]}); `wandb sync` keeps only one "
              f"attempt's history", file=sys.stderr, flush=True)
        return
    if merged:
        print(f"[w2s] W&B offline: {len(merged) + 1} attempts of run {run_id} merged into one "
              f"folder (the others moved to {wandb_dir}/wandb/{MERGED_DIR})", flush=True)


def update_summary(cfg: TrackingConfig, run_id: str, values: dict[str, Any], wandb_dir: Path) -> None:
    """Add values (a PGR known only once the ceiling exists) to a finished run's W&B summary, by
    resuming that run under its id. Rank 0 / a single process only."""
    if cfg.wandb == "off":
        return
    mode = check_wandb(cfg, wandb_dir)
    if mode == "offline":  # W&B cannot reopen an offline run: it would be a second folder, which
        return  # `wandb sync` does not merge; PGR is in pgr.json, the log and the report run
    import wandb

    own_wandb_service()
    run = wandb.init(project=cfg.project, entity=cfg.entity, mode=mode, id=run_id,
                     resume="allow", dir=str(wandb_dir), reinit="finish_previous")
    run.summary.update(values)
    run.finish()
