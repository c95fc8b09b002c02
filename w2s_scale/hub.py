"""The Hugging Face hub, asked within seconds or not at all.

huggingface_hub's HTTP client has no overall timeout (httpx with timeout=None), so on a network
that drops packets instead of refusing them (a cluster node behind a firewall, a blackholed
proxy) `from_pretrained` or `load_dataset` waits for minutes or forever (seen: > 5 minutes on
AutoConfig.from_pretrained against a server that accepts and never answers). So before the
first hub access of a process, the hub (HF_ENDPOINT) is asked for an answer with a deadline
(`HUB_CHECK_S`); without one, this process and the ranks it starts switch to the local cache
(HF_HUB_OFFLINE=1) with one line saying so: what the cache holds loads, what it lacks fails at
once with the loader's own one-line error, naming the model or dataset. Standard library only.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Optional

HUB_CHECK_S = 10.0  # the longest the reachability check may take
CHECKED_ENV = "W2S_HUB_CHECKED"  # set once checked: the ranks inherit the answer
_TRUE = ("1", "true", "yes", "on")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def http_problem(url: str, timeout_s: float, name: str = "w2s-http-check") -> Optional[str]:
    """None if `url` answers an HTTP request within timeout_s (any status: the server is there),
    else why not. Name resolution and the request run in a thread with a deadline, because a
    resolver with no network can block far longer than any socket timeout. Shared by the hub
    check here and the W&B check (tracking.py)."""
    import urllib.error
    import urllib.request

    outcome: list[Optional[str]] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(url, timeout=timeout_s).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # an answer, if not a welcome one: the server is reachable
        except Exception as err:  # noqa: BLE001 - every failure means the same: unreachable
            reason = getattr(err, "reason", err)
            outcome.append(f"{type(reason).__name__}: {reason}"[:160])

    thread = threading.Thread(target=probe, daemon=True, name=name)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        return f"no answer within {timeout_s:.0f} s"
    return outcome[0]


def hub_problem(timeout_s: float = HUB_CHECK_S) -> Optional[str]:
    """None if the hub answers an HTTP request within timeout_s (any status), else why not."""
    return http_problem(f"{endpoint()}/api/models?limit=1", timeout_s, "w2s-hub-check")


def go_offline() -> None:
    """Local cache only, from now on: this process (the libraries read these at call time) and
    the processes it starts (the environment)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True
        datasets_config.HF_DATASETS_OFFLINE = True


def ensure_reachable(what: str) -> None:
    """Before `what` (a model or dataset id) is asked of the hub: once per command, decide
    within HUB_CHECK_S whether the hub answers; if not, local cache only, said in one line."""
    if offline() or os.environ.get(CHECKED_ENV) or os.path.exists(what):  # a local folder
        return
    started = time.monotonic()
    problem = hub_problem()
    os.environ[CHECKED_ENV] = "1"
    if problem is None:
        return
    go_offline()
    if os.environ.get("RANK", "0") == "0":
        print(f"w2s: the Hugging Face hub {endpoint()} cannot be reached ({problem}, "
              f"{time.monotonic() - started:.1f} s; asked for {what}): using the local cache "
              f"only (HF_HUB_OFFLINE=1); set HF_ENDPOINT, a proxy (HTTPS_PROXY) or "
              f"HF_HUB_OFFLINE=1 yourself", file=sys.stderr, flush=True)
