"""pytest fixture ``slurm_cluster``: a real two-node Slurm cluster (see cluster.sh) for the session.

Use it from a test module with::

    from slurm_cluster.fixture import slurm_cluster  # noqa: F401  (tests/ is on sys.path)

or register it for every test in tests/conftest.py the same way (an import, or
``pytest_plugins = ["slurm_cluster.fixture"]`` in the rootdir conftest).

Tests that need it are skipped (with the reason) when not root, not on Linux, or when the Slurm
packages cannot be installed. ``W2S_SLURM_KEEP=1`` keeps the cluster folder (logs) after the run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CLUSTER_SH = HERE / "cluster.sh"
REPO_ROOT = HERE.parent.parent

if str(REPO_ROOT) not in sys.path:  # w2s_scale importable without installing the project
    sys.path.insert(0, str(REPO_ROOT))

from w2s_scale import slurm  # noqa: E402


class SlurmCluster:
    """A running test cluster: ``env`` (for subprocess), ``dir``, ``conf``, and helpers."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.conf = self.dir / "slurm.conf"
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        # Job scripts run with the submitter's environment: make the project importable there.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))]:
            if key != "SLURM_CONF":  # e.g. pytest itself running inside a Slurm job
                del env[key]
        self.env = env
        self.nodes = ["127.0.0.1", "127.0.0.2"]

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command (e.g. ``"scancel", job_id``) against this cluster."""
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def wait(self, job_id: str, timeout: float = 60, poll: float = 0.25) -> slurm.JobInfo:
        """Poll until the job ended (faster than ``sbatch --wait``, which sleeps 2 s then 8 s+)."""
        deadline = time.monotonic() + timeout
        while True:
            info = slurm.job_states([job_id], env=self.env)[str(job_id)]
            if info.finished:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {info.state} ({info.reason}) after {timeout}s")
            time.sleep(poll)

    def wait_for_state(self, job_id: str, states, timeout: float = 30, poll: float = 0.2) -> slurm.JobInfo:
        states = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        while True:
            info = slurm.job_states([job_id], env=self.env)[str(job_id)]
            if info.state in states:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is {info.state} ({info.reason}), not {states}")
            time.sleep(poll)

    def sbatch(self, script_path, *args: str, wait: bool = True, options=(), dependencies=(),
               timeout: float = 60):
        """Submit ``script_path args...``; returns ``(job_id, returncode)``, the return code being
        the job's exit code (128+signal if killed by a signal, 1 if it ended otherwise without
        completing) or ``None`` with ``wait=False``."""
        job_id = slurm.submit(script_path, list(args), list(options), dependencies, env=self.env)
        if not wait:
            return job_id, None
        info = self.wait(job_id, timeout=timeout)
        if info.signal:
            rc = 128 + info.signal
        elif info.exit_code is not None:
            rc = info.exit_code
        else:
            rc = 0 if info.state == "COMPLETED" else 1
        if info.state != "COMPLETED" and rc == 0:
            rc = 1
        return job_id, rc

    def logs(self) -> str:
        """Tail of the daemon logs, for assertion messages."""
        out = []
        for f in sorted((self.dir / "log").glob("*.log")):
            lines = f.read_text(errors="replace").splitlines()[-15:]
            out.append(f"== {f.name}\n" + "\n".join(lines))
        return "\n".join(out)


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the Slurm test cluster needs Linux"
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root (daemons run as SlurmUser=root)"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    inst = subprocess.run(["bash", str(CLUSTER_SH), "install"], capture_output=True, text=True)
    if inst.returncode != 0:
        pytest.skip(f"cannot install Slurm (apt-get): {(inst.stderr or inst.stdout).strip()[-500:]}")
    directory = Path(tempfile.mkdtemp(prefix="w2s-slurm-"))
    directory.chmod(0o755)  # munged needs the path to its socket traversable
    start = subprocess.run(["bash", str(CLUSTER_SH), "start", str(directory)],
                           capture_output=True, text=True, timeout=120)
    if start.returncode != 0:
        subprocess.run(["bash", str(CLUSTER_SH), "stop", str(directory)], capture_output=True)
        pytest.fail(f"Slurm test cluster did not start:\n{start.stdout}\n{start.stderr}")
    cluster = SlurmCluster(directory)
    try:
        yield cluster
    finally:
        subprocess.run(["bash", str(CLUSTER_SH), "stop", str(directory)], capture_output=True, timeout=120)
        if not os.environ.get("W2S_SLURM_KEEP"):
            shutil.rmtree(directory, ignore_errors=True)
