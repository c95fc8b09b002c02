#!/usr/bin/env bash
# A throw-away Slurm cluster on one machine, for tests: one slurmctld and two
# slurmd emulating the nodes "127.0.0.1" and "127.0.0.2", with a private munged.
# Everything (config, keys, sockets, state, logs, pid files) lives in DIR.
#
#   cluster.sh install        apt-get the Debian packages if sbatch is missing (root)
#   cluster.sh start DIR      (re)create the cluster in DIR; prints `export SLURM_CONF=...`
#   cluster.sh stop DIR       cancel jobs, stop the daemons by their pid files
#   cluster.sh status DIR     daemon pids + sinfo; exit 1 if a daemon is down
#
# Knobs (environment): CLUSTER_CPUS (CPUs per emulated node, default 2),
# CLUSTER_CRED_EXPIRE (seconds, default 10; also the delay before a requeued job restarts),
# CLUSTER_START_TIMEOUT (seconds to wait for idle nodes, default 30).
set -euo pipefail

NODES=(127.0.0.1 127.0.0.2)
CPUS=${CLUSTER_CPUS:-2}
CRED_EXPIRE=${CLUSTER_CRED_EXPIRE:-10}
START_TIMEOUT=${CLUSTER_START_TIMEOUT:-30}

die() { echo "cluster.sh: $*" >&2; exit 1; }

cmd_install() {
    if command -v sbatch >/dev/null && command -v slurmctld >/dev/null \
        && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "install needs root"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge; then
        apt-get update && apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
    fi
    # Packages may try to start their (systemd) services; we never use them.
}

# Three free TCP ports: slurmctld, one per slurmd.
free_ports() {
    if command -v python3 >/dev/null; then
        python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
    else
        local base=$((20000 + RANDOM % 20000))
        echo "$base $((base + 1)) $((base + 2))"
    fi
}

# Running and not a zombie (in containers whose pid 1 does not reap, killed daemons stay zombies).
alive() {
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [ "${st:0:1}" != Z ]
}
# The daemon a pid file names, if it still runs: a stale pid file whose pid was reused by an
# unrelated process (other command name) does not count.
pidfile_pid() {
    local f=$1 pid name comm
    [ -f "$f" ] || return 1
    pid=$(cat "$f" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    name=$(basename "$f" .pid); name=${name%%-*}   # munged, slurmctld, slurmd
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "${comm#"$name"}" != "$comm" ] || return 1
    alive "$pid" || return 1
    echo "$pid"
}
pid_alive() { pidfile_pid "$1" >/dev/null; }

# Stop the daemons whose pid files are given: TERM to all at once, KILL after ~5 s.
kill_pidfiles() {
    local f pid pids=() i alive
    for f in "$@"; do
        if pid=$(pidfile_pid "$f") && kill -TERM "$pid" 2>/dev/null; then pids+=("$pid"); fi
        rm -f "$f"
    done
    for i in $(seq 50); do
        alive=0
        for pid in ${pids[@]+"${pids[@]}"}; do
            if alive "$pid"; then alive=1; fi
        done
        [ $alive = 0 ] && return 0
        sleep 0.1
    done
    for pid in ${pids[@]+"${pids[@]}"}; do kill -KILL "$pid" 2>/dev/null || true; done
}

# Kill a process and its descendants (KILL), children first.
kill_tree() {
    local pid=$1 st line f
    for st in /proc/[0-9]*/stat; do
        # after the ")" closing the command name: state, then the parent pid
        { read -r line <"$st"; } 2>/dev/null || continue
        read -r -a f <<<"${line##*) }"
        if [ "${f[1]:-}" = "$pid" ]; then
            st=${st#/proc/}
            kill_tree "${st%/stat}"
        fi
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
    local dir=$1
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd)
    local run=$dir/run
    if [ -f "$dir/slurm.conf" ] && pid_alive "$run/slurmctld.pid"; then
        # Cancel jobs so that their slurmstepd processes go away with the cluster.
        SLURM_CONF=$dir/slurm.conf timeout 5 scancel --quiet --user="$(id -un)" 2>/dev/null || true
        local i
        for i in $(seq 30); do
            [ -z "$(SLURM_CONF=$dir/slurm.conf timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    # slurmstepd daemons that survived the cancel (or whose slurmctld was gone) are found by
    # their log file in DIR/log and killed together with their process trees.
    local p
    for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
        if ls -l "$p/fd" 2>/dev/null | grep -q -- " $dir/log/"; then
            kill_tree "${p#/proc/}"
        fi
    done
    kill_pidfiles "$run"/slurmd-*.pid "$run/slurmctld.pid" "$run/munged.pid"
    rm -f "$dir/munge-run/munge.socket" "$dir/munge-run/munge.socket.lock"
}

write_conf() {
    local dir=$1 ctld_port=$2 port1=$3 port2=$4 host
    host=$(hostname -s 2>/dev/null || hostname)
    cat >"$dir/slurm.conf" <<EOF
# Generated by tests/slurm_cluster/cluster.sh -- a two-node test cluster on one machine.
ClusterName=w2stest
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${dir}/munge-run/munge.socket,cred_expire=${CRED_EXPIRE}
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool/%n
SlurmctldPidFile=${dir}/run/slurmctld.pid
SlurmdPidFile=${dir}/run/slurmd-%n.pid
SlurmctldLogFile=${dir}/log/slurmctld.log
SlurmdLogFile=${dir}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=${dir}/plugstack.conf
TmpFS=${dir}/tmp
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${dir}/jobcomp.txt
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
InactiveLimit=0
KillWait=2
MinJobAge=300
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
JobRequeue=1
NodeName=${NODES[0]} NodeAddr=${NODES[0]} Port=${port1} CPUs=${CPUS} RealMemory=2000 State=UNKNOWN
NodeName=${NODES[1]} NodeAddr=${NODES[1]} Port=${port2} CPUs=${CPUS} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

cmd_start() {
    local dir=$1
    command -v slurmctld >/dev/null || die "slurm is not installed: run '$0 install' first"
    [ "$(id -u)" = 0 ] || die "start needs root (SlurmUser=root, slurmd as root)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    cmd_stop "$dir"
    # Fresh state each start: job ids restart at 1.
    rm -rf "$dir/state" "$dir/spool" "$dir/run" "$dir/log" "$dir/tmp" "$dir/munge" "$dir/munge-run" \
        "$dir/jobcomp.txt"
    mkdir -p "$dir/state" "$dir/run" "$dir/log" "$dir/tmp" "$dir/munge" "$dir/munge-run"
    local node
    for node in "${NODES[@]}"; do mkdir -p "$dir/spool/$node"; done
    # munged: the key in a 0700 folder, the socket folder 0755 and every parent o+x.
    chmod 0755 "$dir" "$dir/munge-run"
    chmod 0700 "$dir/munge"
    local d=$dir
    while [ "$d" != / ]; do d=$(dirname "$d"); chmod o+x "$d" 2>/dev/null || true; done
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$dir/munge/munge.key"
    : >"$dir/plugstack.conf"
    read -r ctld_port port1 port2 < <(free_ports)
    write_conf "$dir" "$ctld_port" "$port1" "$port2"

    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge-run/munge.socket" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed" \
        || die "munged failed to start (see $dir/log/munged.log)"
    local conf=$dir/slurm.conf
    slurmctld -f "$conf" -i || die "slurmctld failed (see $dir/log/slurmctld.log)"
    for node in "${NODES[@]}"; do
        slurmd -f "$conf" -N "$node" || die "slurmd $node failed (see $dir/log/slurmd-$node.log)"
    done

    local deadline=$((SECONDS + START_TIMEOUT)) states=""
    while [ $SECONDS -lt $deadline ]; do
        states=$(SLURM_CONF=$conf timeout 5 sinfo -h -N -o '%N=%t' 2>/dev/null | sort -u | tr '\n' ' ' || true)
        if [ "$(echo "$states" | grep -o '=idle' | wc -l)" = "${#NODES[@]}" ]; then
            echo "export SLURM_CONF=$conf"
            return 0
        fi
        sleep 0.3
    done
    echo "cluster.sh: nodes not idle after ${START_TIMEOUT}s (sinfo: ${states:-no answer})" >&2
    tail -n 20 "$dir"/log/*.log >&2 || true
    cmd_stop "$dir"
    exit 1
}

cmd_status() {
    local dir rc=0 f
    dir=$(cd "$1" && pwd)
    for f in munged slurmctld slurmd-127.0.0.1 slurmd-127.0.0.2; do
        if pid_alive "$dir/run/$f.pid"; then
            echo "$f: running (pid $(cat "$dir/run/$f.pid"))"
        else
            echo "$f: not running"; rc=1
        fi
    done
    if [ $rc = 0 ]; then
        SLURM_CONF=$dir/slurm.conf timeout 5 sinfo -N || rc=1
    fi
    return $rc
}

case "${1:-}" in
    install) cmd_install ;;
    start) [ $# = 2 ] || die "usage: $0 start DIR"; cmd_start "$2" ;;
    stop) [ $# = 2 ] || die "usage: $0 stop DIR"; cmd_stop "$2" ;;
    status) [ $# = 2 ] || die "usage: $0 status DIR"; cmd_status "$2" ;;
    *) die "usage: $0 {install|start DIR|stop DIR|status DIR}" ;;
esac
