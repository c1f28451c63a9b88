#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster for the SLURM launcher test and print, on stdout, the
# path of its slurm.conf (clients find the cluster through SLURM_CONF=<that path>).
#   bash scripts/start_slurm.sh          # start (or reuse) -> /tmp/borealis-slurm-$UID/slurm.conf
#   bash scripts/start_slurm.sh --stop   # stop its daemons and delete its folder
# Installs Debian's slurm-wlm and munge if slurmctld/slurmd/munged are missing (needs root and apt).
# Everything lives in $BOREALIS_SLURM_DIR (default /tmp/borealis-slurm-$UID): a private munge key and
# socket, the daemons' state, spool, pid and log files; the daemons listen on 127.0.0.1 on free ports;
# one node (this host, all its CPUs), one partition `debug`. A test fixture, never a real cluster.
# Messages go to stderr.
set -euo pipefail
DIR=${BOREALIS_SLURM_DIR:-/tmp/borealis-slurm-$(id -u)}
say() { echo "start_slurm: $*" >&2; }
export PATH=$PATH:/usr/sbin:/sbin

stop_pid() {  # stop the daemon whose pid file is $1 (TERM, then KILL after 10 s)
  local f=$1 pid i
  [[ -f $f ]] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

if [[ ${1:-} == --stop ]]; then
  if [[ -f $DIR/slurm.conf ]]; then
    SLURM_CONF=$DIR/slurm.conf scancel --full --state=RUNNING,PENDING,SUSPENDED -u "$(id -un)" 2>/dev/null || true
  fi
  stop_pid "$DIR/slurmd.pid"
  stop_pid "$DIR/slurmctld.pid"
  stop_pid "$DIR/munged.pid"
  rm -rf "$DIR"
  exit 0
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  if [[ $(id -u) != 0 ]]; then say "no SLURM/munge binaries and not root: cannot install"; exit 1; fi
  say "installing Debian's slurm-wlm and munge (apt-get)"
  (apt-get -o DPkg::Lock::Timeout=600 update -qq &&
   DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq slurm-wlm munge) >&2 || {
    say "apt-get install slurm-wlm munge failed"; exit 1; }
fi

# A running cluster answers: reuse it.
if [[ -f $DIR/slurm.conf ]] && SLURM_CONF=$DIR/slurm.conf timeout 10 sinfo -h >/dev/null 2>&1; then
  echo "$DIR/slurm.conf"
  exit 0
fi
stop_pid "$DIR/slurmd.pid"; stop_pid "$DIR/slurmctld.pid"; stop_pid "$DIR/munged.pid"
rm -rf "$DIR"
mkdir -p "$DIR"/{state,spool,munge}
chmod 700 "$DIR" "$DIR/munge"

# munge: a private key and socket (no change to /etc/munge or a system munged).
head -c 1024 /dev/urandom > "$DIR/munge/munge.key"
chmod 400 "$DIR/munge/munge.key"
munged --force --key-file "$DIR/munge/munge.key" --socket "$DIR/munge/munge.socket" \
  --pid-file "$DIR/munged.pid" --log-file "$DIR/munged.log" --seed-file "$DIR/munge/munged.seed" 2>>"$DIR/munged.log" || {
  say "munged did not start (see $DIR/munged.log)"; exit 1; }
munge -S "$DIR/munge/munge.socket" -n | unmunge -S "$DIR/munge/munge.socket" >/dev/null || {
  say "munge does not work (see $DIR/munged.log)"; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
USER_NAME=$(id -un)
cat > "$DIR/slurm.conf" <<EOF
ClusterName=borealis-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=$USER_NAME
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
KillWait=30
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -f "$DIR/slurm.conf" -i 2>>"$DIR/slurmctld.log" || { say "slurmctld did not start (see $DIR/slurmctld.log)"; exit 1; }
slurmd -f "$DIR/slurm.conf" 2>>"$DIR/slurmd.log" || { say "slurmd did not start (see $DIR/slurmd.log)"; exit 1; }
export SLURM_CONF=$DIR/slurm.conf
for i in $(seq 300); do
  state=$(timeout 5 sinfo -h -N -o %t 2>/dev/null | head -1 || true)
  [[ $state == idle* ]] && break
  sleep 0.1
done
if [[ $state != idle* ]]; then
  say "the node did not come up (state '${state:-none}'; see $DIR/slurmctld.log and $DIR/slurmd.log)"
  exit 1
fi
say "one-node cluster up (node $HOST, $CPUS CPUs, partition debug; in $DIR; stop with: bash scripts/start_slurm.sh --stop)"
echo "$DIR/slurm.conf"
