"""w2s_scale.slurm: unit tests of the pure helpers, then tests against a real two-node Slurm
cluster on this machine (tests/slurm_cluster; skipped when not root / Slurm not installable)."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from w2s_scale import slurm  # noqa: E402

PY = sys.executable


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------------------------
# No cluster needed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nodelist, expected",
    [
        ("node[01-03,07],gpu5", ["node01", "node02", "node03", "node07", "gpu5"]),
        ("gpu5", ["gpu5"]),
        ("a,b", ["a", "b"]),
        ("127.0.0.[1-2]", ["127.0.0.1", "127.0.0.2"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("r[1-2]n[1,3]", ["r1n1", "r1n3", "r2n1", "r2n3"]),
        ("dgx-[009-011]-ib", ["dgx-009-ib", "dgx-010-ib", "dgx-011-ib"]),
        ("", []),
    ],
)
def test_parse_hostlist(nodelist, expected):
    assert slurm.parse_hostlist(nodelist) == expected


@pytest.mark.parametrize("bad", ["node[1-2", "node1-2]", "node[a-b]", "node[3-1]"])
def test_parse_hostlist_rejects(bad):
    with pytest.raises(ValueError):
        slurm.parse_hostlist(bad)


def test_hostnames_without_scontrol_falls_back():
    assert slurm.hostnames("node[01-02],gpu5", env={"PATH": "/nonexistent"}) == ["node01", "node02", "gpu5"]


def test_master_addr_port():
    env = {"PATH": "/nonexistent", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456"}
    assert slurm.master_addr_port(env) == ("gpu07", 20000 + 123456 % 20000)
    assert slurm.master_addr_port({**env, "MASTER_PORT": "1234"}) == ("gpu07", 1234)
    assert slurm.master_addr_port({**env, "MASTER_ADDR": "10.0.0.1"})[0] == "10.0.0.1"
    assert slurm.master_addr_port({"PATH": "/nonexistent"}) == ("127.0.0.1", 29500)


def test_write_deepspeed_hostfile(tmp_path):
    p = slurm.write_deepspeed_hostfile(tmp_path / "sub" / "hostfile", ["a", "b"], 4)
    assert p.read_text() == "a slots=4\nb slots=4\n"
    slurm.write_deepspeed_hostfile(p, ["a", "b"], [1, 2])
    assert p.read_text() == "a slots=1\nb slots=2\n"
    with pytest.raises(ValueError):
        slurm.write_deepspeed_hostfile(p, ["a"], [1, 2])


def test_submit_command_line(tmp_path):
    """A fake sbatch records its arguments: the dependency options are the ones Slurm expects."""
    fake = _script(tmp_path / "sbatch", f'printf "%s\\n" "$@" > {tmp_path}/args\necho "42;cluster"\n')
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    assert fake.stat().st_mode & stat.S_IXUSR
    job = slurm.submit("job.sh", ["--x", "1"], ["-N2", "--time=5"], dependencies=["7", 8], env=env)
    assert job == "42"
    args = (tmp_path / "args").read_text().splitlines()
    assert args == ["--parsable", "-N2", "--time=5", "--dependency=afterok:7:8",
                    "--kill-on-invalid-dep=yes", "job.sh", "--x", "1"]
    slurm.submit("job.sh", [], [], env=env)
    assert not any("dependency" in a for a in (tmp_path / "args").read_text().splitlines())


def test_requeue_self_outside_a_job():
    with pytest.raises(slurm.SlurmError):
        slurm.requeue_self(env={"PATH": os.environ["PATH"]})


# --------------------------------------------------------------------------------------------
# Real cluster
# --------------------------------------------------------------------------------------------


def test_cluster_nodes_idle(slurm_cluster):
    out = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %t %c").stdout.split("\n")
    assert sorted(line.split() for line in out if line.strip()) == [
        ["127.0.0.1", "idle", "2"], ["127.0.0.2", "idle", "2"]]
    assert slurm.hostnames("127.0.0.[1-2]", env=slurm_cluster.env) == ["127.0.0.1", "127.0.0.2"]


def test_single_node_job_sbatch_wait_exit_code(slurm_cluster, tmp_path):
    script = _script(tmp_path / "j.sh", 'echo "hello $1" > "$2"\nexit "$3"\n')
    out = tmp_path / "out.txt"
    # plain `sbatch --wait` returns the job's exit code
    proc = slurm_cluster.run("sbatch", "--wait", "-o", str(tmp_path / "slurm-%j.out"),
                             str(script), "w2s", str(out), "7", check=False)
    assert proc.returncode == 7, proc.stderr
    assert out.read_text() == "hello w2s\n"
    job, rc = slurm_cluster.sbatch(script, "again", str(out), "0", options=["-o", "/dev/null"])
    assert rc == 0 and out.read_text() == "hello again\n"
    info = slurm.job_states([job], env=slurm_cluster.env)[job]
    assert (info.state, info.exit_code, info.ok) == ("COMPLETED", 0, True)


def _task_lines(path: Path):
    return sorted(tuple(line.split()) for line in path.read_text().splitlines() if line.strip())


def test_two_node_job_and_one_node_two_tasks(slurm_cluster, tmp_path):
    script = _script(tmp_path / "j.sh", 'srun bash -c \'echo $SLURM_NODEID $SLURMD_NODENAME $SLURM_PROCID\' > "$1"\n')
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    ja, _ = slurm_cluster.sbatch(script, str(a), wait=False, options=["-N2", "--ntasks-per-node=1", "-o", "/dev/null"])
    jb, _ = slurm_cluster.sbatch(script, str(b), wait=False, options=["-N1", "-n2", "-o", "/dev/null"])
    assert slurm_cluster.wait(ja).ok and slurm_cluster.wait(jb).ok, slurm_cluster.logs()
    assert _task_lines(a) == [("0", "127.0.0.1", "0"), ("1", "127.0.0.2", "1")]
    assert [line[2] for line in _task_lines(b)] == ["0", "1"]
    assert len({line[1] for line in _task_lines(b)}) == 1  # both tasks on one node


def test_dependency_chain_and_failed_dependency(slurm_cluster, tmp_path):
    order = tmp_path / "order.txt"
    step = _script(tmp_path / "step.sh", 'sleep "$2"\necho "$1" >> "$3"\nexit "$4"\n')
    opts = ["-o", "/dev/null"]
    env = slurm_cluster.env
    # ok chain A -> B -> C, A slowest so that order is only due to the dependencies
    a = slurm.submit(step, ["A", "1.5", str(order), "0"], opts, env=env)
    b = slurm.submit(step, ["B", "0", str(order), "0"], opts, dependencies=[a], env=env)
    c = slurm.submit(step, ["C", "0", str(order), "0"], opts, dependencies=[b], env=env)
    # failing chain F -> G (G must never run)
    failed = tmp_path / "failed.txt"
    f = slurm.submit(step, ["F", "0", str(failed), "3"], opts, env=env)
    g = slurm.submit(step, ["G", "0", str(failed), "0"], opts, dependencies=[f], env=env)
    states = slurm.job_states([b, c], env=env)
    assert states[b].state == "PENDING" and states[b].reason == "Dependency"
    infos = {j: slurm_cluster.wait(j, timeout=40) for j in (c, g)}
    infos.update(slurm.job_states([a, b, f], env=env))
    assert order.read_text().split() == ["A", "B", "C"]
    assert all(infos[j].ok for j in (a, b, c))
    assert (infos[f].state, infos[f].exit_code) == ("FAILED", 3)
    assert infos[g].state == "CANCELLED"
    assert infos[g].reason == "DependencyNeverSatisfied"
    assert failed.read_text().split() == ["F"]
    # once the controller forgets a job (MinJobAge), the jobcomp/filetxt record remains
    comp = slurm._from_jobcomp([f, g], slurm._config(env))
    assert (comp[f].state, comp[f].exit_code, comp[g].state) == ("FAILED", 3, "CANCELLED")
    assert slurm.job_states(["999999"], env=env)["999999"].state == "UNKNOWN"


def _wait_file(path: Path, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not created"
        time.sleep(0.1)


def test_scancel_signal_reaches_step_and_batch_shell(slurm_cluster, tmp_path):
    d = tmp_path
    script = _script(d / "sig.sh", f"""
        trap 'echo usr1 > {d}/batch_usr1' USR1
        srun bash -c "trap 'echo usr1 > {d}/step_usr1; exit 0' USR1; touch {d}/step_ready; while :; do sleep 0.1; done"
        echo "step rc=$?" > {d}/step_done
        touch {d}/batch_ready
        for i in $(seq 200); do [ -f {d}/batch_usr1 ] && exit 0; sleep 0.1; done
        exit 1
    """)
    job, _ = slurm_cluster.sbatch(script, wait=False, options=["-o", str(d / "out.txt")])
    _wait_file(d / "step_ready")
    # without --batch, a signal other than KILL goes to the job's steps (srun), not the batch shell
    slurm_cluster.run("scancel", "--signal=USR1", job)
    _wait_file(d / "step_done")
    assert (d / "step_usr1").read_text() == "usr1\n"
    assert (d / "step_done").read_text() == "step rc=0\n"
    assert not (d / "batch_usr1").exists()
    # with --batch it goes to the batch shell, which traps it
    _wait_file(d / "batch_ready")
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    info = slurm_cluster.wait(job)
    assert info.ok, (info, (d / "out.txt").read_text())


def test_requeue_reruns_with_restart_count(slurm_cluster, tmp_path):
    d = tmp_path
    script = _script(d / "rq.sh", f"""
        echo "run ${{SLURM_RESTART_COUNT:-0}}" >> {d}/runs
        if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then
            "{PY}" -c "from w2s_scale.slurm import requeue_self; requeue_self()" || exit 2
            sleep 60
            exit 1
        fi
        exit 0
    """)
    t0 = time.monotonic()
    job, rc = slurm_cluster.sbatch(script, options=["-o", str(d / "out.txt")], timeout=45)
    assert rc == 0, (d / "out.txt").read_text()
    assert (d / "runs").read_text().split("\n")[:2] == ["run 0", "run 1"]
    info = slurm.job_states([job], env=slurm_cluster.env)[job]
    assert (info.state, info.restarts) == ("COMPLETED", 1)
    print(f"requeue round trip {time.monotonic() - t0:.1f}s")


def test_master_addr_port_and_hostfile_in_two_node_job(slurm_cluster, tmp_path):
    d = tmp_path
    task = d / "task.py"
    task.write_text(textwrap.dedent(f"""
        import json, os, socket, time
        from w2s_scale import slurm
        addr, port = slurm.master_addr_port()
        rank = int(os.environ["SLURM_PROCID"])
        if rank == 0:  # rendezvous: rank 0 listens on (MASTER_ADDR, port), rank 1 connects
            hosts = slurm.hostnames(os.environ["SLURM_JOB_NODELIST"])
            slurm.write_deepspeed_hostfile("{d}/hostfile", hosts, int(os.environ["SLURM_NTASKS_PER_NODE"]))
            srv = socket.create_server((addr, port))
            srv.settimeout(30)
            conn, _ = srv.accept()
            msg = conn.recv(100).decode()
        else:
            for _ in range(150):
                try:
                    conn = socket.create_connection((addr, port), timeout=2)
                    break
                except OSError:
                    time.sleep(0.2)
            conn.sendall(b"hello from " + os.environ["SLURMD_NODENAME"].encode())
            msg = ""
        with open("{d}/rank%d.json" % rank, "w") as f:
            json.dump(dict(addr=addr, port=port, node=os.environ["SLURMD_NODENAME"], msg=msg), f)
    """))
    script = _script(d / "j.sh", f'srun "{PY}" {task}\n')
    job, rc = slurm_cluster.sbatch(script, options=["-N2", "--ntasks-per-node=1", "-o", str(d / "out.txt")])
    assert rc == 0, (d / "out.txt").read_text()
    r0, r1 = (json.loads((d / f"rank{i}.json").read_text()) for i in (0, 1))
    assert (r0["addr"], r0["port"]) == (r1["addr"], r1["port"]) == ("127.0.0.1", 20000 + int(job) % 20000)
    assert (r0["node"], r1["node"]) == ("127.0.0.1", "127.0.0.2")
    assert r0["msg"] == "hello from 127.0.0.2"
    assert (d / "hostfile").read_text() == "127.0.0.1 slots=1\n127.0.0.2 slots=1\n"
