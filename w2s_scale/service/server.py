"""uvicorn around the app: `serve` runs it in the foreground (`w2s serve`; Ctrl-C or SIGTERM
stops it cleanly), `start` in a thread of this process (tests, or a local sweep that wants the
service beside it).

The socket is bound here, not by uvicorn, so that port 0 (any free port) works and the URL is
known before the first request; the URL file (discovery.announce) is written once the socket
listens and removed when the server stops.
"""
from __future__ import annotations

import errno
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from w2s_scale.errors import UserError
from w2s_scale.service.app import make_app
from w2s_scale.service.discovery import URL_ENV, announce, withdraw
from w2s_scale.service.ledger import Ledger
from w2s_scale.service.store import open_store

START_TIMEOUT_S = 20


class ServeError(UserError):
    """The server cannot start: the address is taken or not this machine's."""


def _uvicorn():
    try:
        import uvicorn  # optional: the `serve` extra
    except ImportError:
        raise ServeError("w2s serve needs uvicorn and FastAPI: pip install -e '.[serve]'") from None
    return uvicorn


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ServeError(f"--port {port}: already in use on {host} (another w2s serve?); "
                             f"pick another port, or --port 0 for a free one") from None
        raise ServeError(f"--host {host}: cannot listen there ({err.strerror}); give an address "
                         f"of this machine (127.0.0.1, or 0.0.0.0 for every interface)") from None
    sock.listen(128)
    return sock


def public_url(host: str, port: int) -> str:
    """The URL others use: this machine's name when listening on every interface."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app):
    uvicorn = _uvicorn()
    # no access log: the service's own log (ledger.py) records every call
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                         lifespan="off", timeout_graceful_shutdown=5))


@dataclass
class Running:
    """A server in a thread of this process."""
    url: str
    server: object
    thread: threading.Thread
    ledger: Optional[Ledger] = None

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=START_TIMEOUT_S)
        if self.ledger is not None:
            self.ledger.close()


def start(app, host: str = "127.0.0.1", port: int = 0, ledger: Optional[Ledger] = None) -> Running:
    """Serve `app` from a thread; returns once it answers."""
    sock = bind(host, port)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="w2s-eval-service")
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ServeError(f"the evaluation service did not start on {host}:{port}")
        time.sleep(0.02)
    return Running(public_url(host, sock.getsockname()[1]), server, thread, ledger)


class Stopped(Exception):
    """SIGTERM reached the foreground server (after uvicorn's own clean shutdown)."""


def _stopped(signum, frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def serve(labels: Path, host: str, port: int, log: Path, budget: Optional[int],
          allow_resubmit: bool, url_file: Path) -> int:
    """`w2s serve`: the store opened and checked, the log replayed, then requests until stopped."""
    store = open_store(labels)
    ledger = Ledger(log)
    try:
        app = make_app(store, ledger, budget=budget, allow_resubmit=allow_resubmit)
        sock = bind(host, port)
        url = public_url(host, sock.getsockname()[1])
        announce(url_file, url)
        sizes = ", ".join(f"{d} ({len(store.seeds(d))} seed(s))" for d in store.datasets)
        skipped = f"; {ledger.skipped} unreadable log line(s) skipped" if ledger.skipped else ""
        print(f"w2s serve: evaluation service at {url}\n"
              f"  labels {labels} [{sizes}], {len(store.baselines)} baseline pair(s)\n"
              f"  log {log} ({sum(ledger.spent.values())} scored submission(s) so far{skipped}), "
              f"budget {budget if budget is not None else 'none'} per method"
              f"{', resubmissions allowed' if allow_resubmit else ''}\n"
              f"  jobs find it with {URL_ENV}={url} or the file {url_file}", flush=True)
        # uvicorn stops on SIGINT / SIGTERM, then raises the signal again for the handler that
        # was there before it: this one, so that the URL file is withdrawn rather than the
        # process ended by SIGTERM's default action
        previous = signal.signal(signal.SIGTERM, _stopped)
        try:
            _server(app).run(sockets=[sock])
        except (Stopped, KeyboardInterrupt):
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            withdraw(url_file, url)
            sock.close()
        print("w2s serve: stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        ledger.close()
