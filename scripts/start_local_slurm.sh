#!/usr/bin/env bash
# A real one-node SLURM on this machine (Debian's slurmctld, slurmd and munge), as root, in seconds:
# the scheduler `experiments.ablate --launcher=slurm` is tested against. Idempotent: installs the
# packages if missing, writes /etc/slurm/slurm.conf for this machine's CPUs, (re)starts the three
# daemons and waits until the node accepts jobs.
#   sudo bash scripts/start_local_slurm.sh        # then: sinfo; sbatch --wrap=hostname
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then echo "start_local_slurm: needs root" >&2; exit 1; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

node=$(hostname -s)
cpus=$(nproc)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=local
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
KillWait=30
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key

# Stops a daemon started earlier by its pid file (the paths slurm.conf names above), waiting until
# it is gone: SIGTERM, then SIGKILL after 30 s. A missing pid file, or a stale one (no such
# process, or its pid now another program's), is only removed. A zombie counts as gone.
runs() {  # PID NAME: that process exists, runs NAME and is no zombie
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
stop_daemon() {  # NAME PIDFILE
  local name=$1 pidfile=$2 pid
  pid=$([ -f "$pidfile" ] && tr -dc 0-9 < "$pidfile" || true)
  if [ -n "$pid" ] && runs "$pid" "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do runs "$pid" "$name" || break; sleep 0.1; done
    if runs "$pid" "$name"; then
      echo "start_local_slurm: $name (pid $pid) still runs 30 s after SIGTERM: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      while runs "$pid" "$name"; do sleep 0.1; done
    fi
  fi
  rm -f "$pidfile"
}
stop_daemon slurmd /run/slurmd.pid
stop_daemon slurmctld /run/slurmctld.pid
pgrep -x munged >/dev/null || su -s /bin/sh munge -c munged 2>/dev/null || munged --force
sleep 1
slurmctld
slurmd

for _ in $(seq 60); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    echo "start_local_slurm: node ${node} up with ${cpus} CPUs (partition local)"
    exit 0
  fi
  scontrol update nodename="${node}" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "start_local_slurm: the node did not come up; see /var/log/slurm/" >&2
sinfo >&2 || true
exit 1
