"""Run logs: a jsonl file always, W&B when asked, a progress bar; rank 0 only."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

from w2s_scale import distributed as dist
from w2s_scale.config import TrackingConfig


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
        if cfg.wandb != "off":
            import wandb

            self._wandb = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.wandb,
                                     group=group, name=run_name, job_type=run_name.split("-")[0],
                                     config=config or {}, dir=str(wandb_dir or log_path.parent),
                                     reinit="finish_previous")

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
            if numbers:  # W&B's own step counter: train and predict records interleave
                self._wandb.log(numbers)

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


def update_summary(cfg: TrackingConfig, run_id: str, values: dict[str, Any], wandb_dir: Path) -> None:
    """Add values (a PGR known only once the ceiling exists) to a finished run's W&B summary, by
    resuming that run under its id. Rank 0 / a single process only."""
    if cfg.wandb == "off":
        return
    import wandb

    run = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.wandb, id=run_id,
                     resume="allow", dir=str(wandb_dir), reinit="finish_previous")
    run.summary.update(values)
    run.finish()
