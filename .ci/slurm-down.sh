#!/usr/bin/env bash
# Stop the single-node SLURM cluster of .ci/slurm-up.sh: exactly the daemons it recorded in
# $OFA_SLURM_DIR/pids (each checked to still be the program it started), newest first.
set -uo pipefail

DIR=${OFA_SLURM_DIR:-${TMPDIR:-/tmp}/ofa-eval-slurm}
PIDS="$DIR/pids"
[[ -s "$PIDS" ]] || { echo "slurm-down: nothing recorded in $PIDS" >&2; exit 0; }

# Jobs still running on this private cluster were started by the tests; their slurmstepd
# processes would outlive slurmd, so cancel them first.
SLURM_CONF="$DIR/slurm.conf" timeout 10 scancel --full --user="$(id -un)" 2>/dev/null || true

ours() {  # is PID still the daemon NAME that slurm-up.sh started?
    [[ "$(cat "/proc/$2/comm" 2>/dev/null)" == "$1"* ]]
}

tac "$PIDS" | while read -r name pid; do
    ours "$name" "$pid" || continue
    kill -TERM "$pid"
    for _ in $(seq 100); do ours "$name" "$pid" || break; sleep 0.1; done
    if ours "$name" "$pid"; then
        echo "slurm-down: $name ($pid) ignored SIGTERM for 10s; killing it" >&2
        kill -KILL "$pid"
    fi
done
rm -f "$PIDS"
echo "slurm-down: stopped (logs kept in $DIR/log)" >&2
