#!/usr/bin/env bash
# Stop the daemons started by slurm-up.sh, by PID.
pids=/tmp/ditkd-slurm/pids
[ -f $pids ] && xargs -r kill < $pids 2>/dev/null
rm -f $pids
exit 0
