#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on localhost for tests/test_slurm.py (no systemd needed).
#
#   .ci/slurm-up.sh              # installs slurm-wlm and munge when missing, starts the daemons
#   export SLURM_CONF=$OFA_SLURM_DIR/slurm.conf   # tests/slurm_cluster.py also finds it by itself
#   .ci/slurm-down.sh            # stops exactly the daemons this script started
#
# Everything lives under $OFA_SLURM_DIR (default: ${TMPDIR:-/tmp}/ofa-eval-slurm): slurm.conf, a
# munge key and socket of its own, state, spool and logs, and `pids` (one "name pid" per line).
# OFA_SLURM_ACCOUNTING=1 also starts MariaDB on a private port and slurmdbd, so that `sacct` works;
# by default the cluster has no accounting, as many do. A requeued job may start again after
# cred_expire seconds: 10 here, SLURM's default is 120.
set -Eeuo pipefail

DIR=${OFA_SLURM_DIR:-${TMPDIR:-/tmp}/ofa-eval-slurm}
CTLD_PORT=${OFA_SLURM_CTLD_PORT:-16817}
SLURMD_PORT=${OFA_SLURM_SLURMD_PORT:-16818}
DBD_PORT=${OFA_SLURM_DBD_PORT:-16819}
DB_PORT=${OFA_SLURM_DB_PORT:-13306}
ACCOUNTING=${OFA_SLURM_ACCOUNTING:-0}
WAIT_S=${OFA_SLURM_WAIT_S:-60}

log() { echo "slurm-up: $*" >&2; }
fail() {  # stop whatever this call started, then give up
    log "$*"
    OFA_SLURM_DIR="$DIR" "$(dirname "$0")/slurm-down.sh"
    exit 1
}

# A pids file outlives its daemons when a machine or session stops without slurm-down.sh: refuse
# only when one of the recorded daemons still runs, and forget a record whose daemons are all gone.
if [[ -s "$DIR/pids" ]]; then
    while read -r name pid; do
        if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name"* ]]; then
            log "$name ($pid) from an earlier call still runs (see $DIR/pids); run .ci/slurm-down.sh first"
            exit 1
        fi
    done <"$DIR/pids"
    log "forgetting $DIR/pids: none of the daemons it records still runs"
    rm -f "$DIR/pids"
fi

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    if [[ "$ACCOUNTING" == 1 ]]; then
        command -v slurmdbd >/dev/null || missing+=(slurmdbd)
        command -v mariadbd >/dev/null || command -v mysqld >/dev/null || missing+=(mariadb-server)
    fi
    ((${#missing[@]} == 0)) && return
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

record() { echo "$1 $2" >>"$DIR/pids"; }

start_munge() {
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
    chmod 400 "$DIR/munge/munge.key"
    munged --foreground --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed" \
        --log-file="$DIR/log/munged.log" </dev/null >>"$DIR/log/munged.out" 2>&1 &
    record munged $!
    for _ in $(seq 50); do [[ -S "$DIR/munge/munge.socket" ]] && return; sleep 0.1; done
    fail "munged did not create its socket (see $DIR/log/munged.log)"
}

start_database() {
    local mariadbd
    mariadbd=$(command -v mariadbd || command -v mysqld)
    mysql_install_db --no-defaults --user=root --datadir="$DIR/mysql/data" --auth-root-authentication-method=normal \
        >"$DIR/log/mysql-install.log" 2>&1
    "$mariadbd" --no-defaults --user=root --datadir="$DIR/mysql/data" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --socket="$DIR/mysql/mysql.sock" --pid-file="$DIR/mysql/mysqld.pid" --skip-name-resolve \
        --log-error="$DIR/log/mysqld.log" </dev/null >>"$DIR/log/mysqld.out" 2>&1 &
    record "$(basename "$mariadbd")" $!  # the name slurm-down.sh checks against /proc/PID/comm
    for _ in $(seq 100); do
        mysql --no-defaults --socket="$DIR/mysql/mysql.sock" -uroot -e "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.2
    done
    mysql --no-defaults --socket="$DIR/mysql/mysql.sock" -uroot -e \
        "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; \
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
    cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"
    # slurmdbd reads slurmdbd.conf from the folder of SLURM_CONF
    SLURM_CONF="$DIR/slurm.conf" slurmdbd -D -s </dev/null >>"$DIR/log/slurmdbd.out" 2>&1 &
    record slurmdbd $!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$DBD_PORT") 2>/dev/null && return
        sleep 0.2
    done
    fail "slurmdbd does not listen on port $DBD_PORT (see $DIR/log/slurmdbd.log)"
}

write_slurm_conf() {
    local cpus memory_mb accounting
    cpus=$(nproc)
    memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    accounting="AccountingStorageType=accounting_storage/none"
    if [[ "$ACCOUNTING" == 1 ]]; then
        accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$DIR/munge/munge.socket"
    fi
    cat >"$DIR/slurm.conf" <<EOF
ClusterName=ofa-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
$accounting
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_for_idle_node() {
    local state deadline=$((SECONDS + WAIT_S)) name pid
    while ((SECONDS < deadline)); do
        state=$(SLURM_CONF="$DIR/slurm.conf" timeout 5 sinfo --noheader --Node --format=%t 2>/dev/null || true)
        [[ "$state" == idle* ]] && return
        while read -r name pid; do
            kill -0 "$pid" 2>/dev/null || fail "$name exited (see $DIR/log/$name.log)"
        done <"$DIR/pids"
        sleep 0.2
    done
    fail "the node is not idle after ${WAIT_S}s (state: ${state:-none}; logs: $DIR/log)"
}

install_packages
rm -rf "$DIR"/{munge,state,spool,log,mysql}  # a fresh cluster: no jobs left from an earlier one
mkdir -p "$DIR"/{munge,state,spool,log,mysql}
chmod 700 "$DIR/munge"
: >"$DIR/pids"
trap 'fail "a command failed (line $LINENO)"' ERR
start=$(date +%s.%N)
start_munge
write_slurm_conf
[[ "$ACCOUNTING" == 1 ]] && start_database
SLURM_CONF="$DIR/slurm.conf" slurmctld -D -i -f "$DIR/slurm.conf" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 &
record slurmctld $!
SLURM_CONF="$DIR/slurm.conf" slurmd -D -N localhost -f "$DIR/slurm.conf" </dev/null >>"$DIR/log/slurmd.out" 2>&1 &
record slurmd $!
if [[ "$ACCOUNTING" == 1 ]]; then
    SLURM_CONF="$DIR/slurm.conf" sacctmgr -i add cluster ofa-ci >/dev/null 2>&1 || true
fi
wait_for_idle_node
log "up in $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $start}")s: export SLURM_CONF=$DIR/slurm.conf"
