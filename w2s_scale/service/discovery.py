"""How jobs find the evaluation service, and where they keep what it could not take.

The URL, first found wins: the one given (--url, a client argument), the environment variable
W2S_EVAL_URL (what a sweep's jobs are given), then the URL file that `w2s serve` writes when it
starts and removes when it stops (W2S_EVAL_URL_FILE, default ~/.w2s/eval-service.json: on a
cluster the home folder is usually shared by the login node and the compute nodes).

Pending submissions (the service was down or unknown) are kept in W2S_PENDING_DIR, default
~/.w2s/pending, until `w2s submit --pending` sends them.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Optional

from w2s_scale.errors import UserError
from w2s_scale.files import atomic_write
from w2s_scale.service.store import now

URL_ENV = "W2S_EVAL_URL"
URL_FILE_ENV = "W2S_EVAL_URL_FILE"
PENDING_ENV = "W2S_PENDING_DIR"


class ServiceNotFound(UserError):
    """No URL given, in the environment, or in a URL file."""


def _home() -> Path:
    return Path.home() / ".w2s"


def url_file(given: Optional[str | Path] = None) -> Path:
    return Path(given or os.environ.get(URL_FILE_ENV) or _home() / "eval-service.json")


def pending_dir(given: Optional[str | Path] = None) -> Path:
    return Path(given or os.environ.get(PENDING_ENV) or _home() / "pending")


def announce(path: Path, url: str) -> None:
    """The URL file of a server that just started (readable by every job: it holds no labels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"url": url, "host": socket.gethostname(), "pid": os.getpid(),
                                   "started": now()}, indent=1) + "\n")


def withdraw(path: Path, url: str) -> None:
    """Remove the URL file as the server stops, unless another server has written it since."""
    try:
        if json.loads(path.read_text()).get("url") == url:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def find_url(given: Optional[str] = None, url_file_path: Optional[str | Path] = None) -> str:
    if given:
        return given.rstrip("/")
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV].rstrip("/")
    path = url_file(url_file_path)
    try:
        url = json.loads(path.read_text()).get("url")
    except (OSError, ValueError, AttributeError):
        url = None
    if not url:
        raise ServiceNotFound(f"no evaluation service is known here: none given (--url), "
                              f"{URL_ENV} is not set and {path} does not name one; start it "
                              f"with `w2s serve --labels DIR` where the labels are, and set "
                              f"{URL_ENV}=http://HOST:PORT for the jobs")
    return str(url).rstrip("/")
