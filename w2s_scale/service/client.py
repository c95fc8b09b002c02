"""The evaluation service's client (httpx), what a method's job calls to be scored.

A submission the service cannot take now (down, unknown, or failing with a 5xx) is never lost:
it is written whole into the pending folder (discovery.pending_dir) before the error is raised,
and `send_pending` (`w2s submit --pending`) sends it later. Each submission carries an id made
here once, kept with it in the pending file: if an answer was lost after the service scored it,
sending it again returns that first answer (no second score, no budget spent). A refusal (4xx:
malformed, scored already, budget spent) is final: sending again would be refused again, so a
pending file refused later is moved into `refused/` beside the others, with the reason.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from w2s_scale.errors import UserError
from w2s_scale.files import atomic_write
from w2s_scale.service.discovery import ServiceNotFound, find_url, pending_dir
from w2s_scale.service.store import now

REFUSED = "refused"


class ServiceDown(UserError):
    """The service could not take the submission now; it is kept in `pending`."""

    def __init__(self, message: str, pending: Optional[Path] = None):
        super().__init__(message)
        self.pending = pending


class SubmissionRefused(UserError):
    """The service refused the submission (4xx); `status` is its HTTP status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def default_who() -> str:
    """user@host, and the Slurm job where there is one: who sent it, for the log."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    job = os.environ.get("SLURM_JOB_ID")
    return f"{user}@{socket.gethostname()}" + (f" (slurm job {job})" if job else "")


def _httpx():
    try:
        import httpx  # optional: the `serve` extra
    except ImportError:
        raise UserError("the evaluation client needs httpx: pip install -e '.[serve]'") from None
    return httpx


def _error_text(response) -> str:
    try:
        return str(response.json().get("error") or response.text)
    except (ValueError, AttributeError):
        return response.text[:300]


@dataclass
class PendingReport:
    scored: list[tuple[Path, dict]] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    left: list[Path] = field(default_factory=list)  # still pending (the service went down again)


class EvalClient:
    def __init__(self, url: Optional[str] = None, pending: Optional[str | Path] = None,
                 url_file: Optional[str | Path] = None, timeout: float = 60.0):
        self._url, self._url_file = url, url_file
        self.pending = pending_dir(pending)
        self.timeout = timeout

    @property
    def url(self) -> str:
        return find_url(self._url, self._url_file)  # looked up per call: a restarted server may move

    def _get(self, path: str) -> dict:
        httpx = _httpx()
        url = self.url
        try:
            response = httpx.get(f"{url}{path}", timeout=self.timeout)
        except httpx.TransportError as err:
            raise ServiceDown(f"evaluation service {url} cannot be reached "
                              f"({type(err).__name__}: {err}); is `w2s serve` running?") from None
        if response.status_code != 200:
            raise SubmissionRefused(f"{url}{path}: {_error_text(response)}", response.status_code)
        return response.json()

    def health(self) -> dict:
        return self._get("/health")

    def baselines(self) -> dict:
        return self._get("/baselines")

    def submit(self, method: str, run: str, predictions: Mapping[str, Any], split: str = "test",
               who: Optional[str] = None, dataset: Optional[str] = None, seed: Optional[int] = None,
               weak: Optional[str] = None, strong: Optional[str] = None) -> dict:
        """The service's scores of these predictions ({id: p1 or class probabilities}). Raises
        ServiceDown (the predictions kept in the pending folder) or SubmissionRefused."""
        return self.send(submission(method, run, predictions, split, who, dataset, seed, weak, strong))

    def send(self, body: dict) -> dict:
        """Send a submission made by `submission` (as `submit` does). A caller that keeps the
        body and sends it again after a lost answer gets the first answer back, not a second
        score: the body's submission_id is the same."""
        return self._send(body)

    def _send(self, body: dict, kept: Optional[Path] = None) -> dict:
        """POST one submission; `kept`: its pending file, if it has one already."""
        httpx = _httpx()
        try:
            url = self.url
        except ServiceNotFound as err:
            raise self._down(body, kept, str(err).split(";")[0]) from None
        try:
            response = httpx.post(f"{url}/submit", json=body, timeout=self.timeout)
        except httpx.TransportError as err:
            raise self._down(body, kept, f"evaluation service {url} cannot be reached "
                                         f"({type(err).__name__}: {err})") from None
        if response.status_code >= 500:
            raise self._down(body, kept, f"evaluation service {url} failed "
                                         f"({response.status_code}: {_error_text(response)})")
        if response.status_code != 200:
            raise SubmissionRefused(f"{url} refused {body.get('method')} run {body.get('run')} "
                                    f"({response.status_code}): {_error_text(response)}",
                                    response.status_code)
        return response.json()

    def _down(self, body: dict, kept: Optional[Path], reason: str) -> ServiceDown:
        path = kept or self.keep(body, reason)
        return ServiceDown(f"{reason}; the predictions are kept in {path}; send them when the "
                           f"service is up with `w2s submit --pending --pending-dir "
                           f"{self.pending}`", path)

    def keep(self, body: dict, reason: str) -> Path:
        """Write the submission into the pending folder, whole or not at all."""
        self.pending.mkdir(parents=True, exist_ok=True)
        tag = "-".join(_safe(str(body.get(k, ""))) for k in ("method", "run", "split"))
        path = self.pending / f"{time.strftime('%Y%m%d-%H%M%S')}-{tag}-{body['submission_id'][:8]}.json"
        atomic_write(path, json.dumps({"kept_at": now(), "reason": reason, "submission": body}) + "\n")
        return path

    def send_pending(self) -> PendingReport:
        """Send every pending submission, oldest first; scored ones are removed, refused ones
        moved into refused/ with the reason; stops at the first that cannot be sent."""
        report = PendingReport()
        files = sorted(self.pending.glob("*.json")) if self.pending.is_dir() else []
        for i, path in enumerate(files):
            try:
                body = json.loads(path.read_text())["submission"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                report.refused.append((path, f"unreadable pending file ({err})"))
                continue
            try:
                report.scored.append((path, self._send(body, kept=path)))
                path.unlink()
            except SubmissionRefused as err:
                moved = self.pending / REFUSED / path.name
                moved.parent.mkdir(exist_ok=True)
                atomic_write(moved, json.dumps({"refused": str(err), "submission": body}) + "\n")
                path.unlink()
                report.refused.append((moved, str(err)))
            except ServiceDown:
                report.left = files[i:]
                break
        return report


def submission(method: str, run: str, predictions: Mapping[str, Any], split: str = "test",
               who: Optional[str] = None, dataset: Optional[str] = None, seed: Optional[int] = None,
               weak: Optional[str] = None, strong: Optional[str] = None) -> dict:
    """The body of one submission, with a new submission_id (made once, here)."""
    body = {"method": method, "run": run, "who": who or default_who(), "split": split,
            "dataset": dataset, "seed": seed, "weak": weak, "strong": strong,
            "submission_id": uuid.uuid4().hex,
            # numpy values (a model's output as it comes) become JSON numbers and lists
            "predictions": {str(k): v.tolist() if hasattr(v, "tolist") else v
                            for k, v in predictions.items()}}
    return {k: v for k, v in body.items() if v is not None}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text)[:40] or "_"
