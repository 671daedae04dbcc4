#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests and CI (Debian/Ubuntu, as root).
#
#   scripts/local-slurm.sh up      install the packages if missing, write the config, start munged,
#                                  MariaDB, slurmdbd, slurmctld and slurmd (a no-op when already up)
#   scripts/local-slurm.sh down    cancel the cluster's jobs and stop the daemons by PID
#   scripts/local-slurm.sh status  exit 0 when the cluster answers and its node is usable
#
# Runtime state (spool, logs, database, PIDs) lives in $LOCAL_SLURM_DIR (default: .local-slurm/ in
# the project). The config goes to /etc/slurm, where every SLURM command finds it without
# environment variables; a config there that this script did not write is never overwritten.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${LOCAL_SLURM_DIR:-$ROOT/.local-slurm}"
CONF_DIR=/etc/slurm
MARK="# written by scripts/local-slurm.sh"
CLUSTER=localcluster
PARTITION=debug
DB_PORT="${LOCAL_SLURM_DB_PORT:-3307}"  # not 3306: leave a system MariaDB alone
PIDS="$STATE/pids"

log() { echo "local-slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

alive() { [[ -f "$PIDS/$1" ]] && kill -0 "$(cat "$PIDS/$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for ((i = 0; i < t * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$what did not come up within ${t}s (logs in $STATE/log)"
}

install_packages() {
  local missing=()
  for bin in sbatch:slurm-wlm slurmctld:slurm-wlm munged:munge slurmdbd:slurmdbd mariadbd:mariadb-server; do
    command -v "${bin%%:*}" >/dev/null || missing+=("${bin##*:}")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "packages missing (${missing[*]}) and not root: install them or run as root"
  command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get on this machine"
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge slurmdbd mariadb-server >/dev/null
}

write_config() {
  local conf="$CONF_DIR/slurm.conf"
  if [[ -f $conf ]] && ! grep -qF "$MARK" "$conf"; then
    die "$conf exists and was not written by this script: this machine has its own SLURM; leave it be"
  fi
  mkdir -p "$CONF_DIR" "$STATE"/{spool/ctld,spool/d,log,run,pids}
  # the node line as slurmd detects it (NodeName = hostname -s, CPUs, sockets, memory)
  local node
  node="$(slurmd -C | head -1)"
  cat >"$conf.tmp" <<EOF
$MARK; state in $STATE
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job is otherwise held for the credential lifetime (120 s)
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# the defaults wait 30-60 s between scheduling passes
SchedulerParameters=bf_interval=1,sched_interval=2
ReturnToService=2
KillWait=10
MinJobAge=300
JobRequeue=1
MpiDefault=none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$conf.tmp" "$conf"
  local dbconf="$CONF_DIR/slurmdbd.conf"
  cat >"$dbconf.tmp" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$dbconf.tmp"
  mv "$dbconf.tmp" "$dbconf"
}

start() {  # start NAME COMMAND...: runs in the background, detached, PID recorded
  local name=$1; shift
  alive "$name" && return 0
  setsid "$@" >>"$STATE/log/$name.out" 2>&1 </dev/null &
  echo $! >"$PIDS/$name"
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # one already serves
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  [[ -f /etc/munge/munge.key ]] || { mungekey --create && chown munge:munge /etc/munge/munge.key; }
  start munged runuser -u munge -- munged --foreground
  wait_for 20 munged sh -c 'munge -n </dev/null | unmunge'
}

sql() { mariadb --protocol=socket --socket="$STATE/run/mysqld.sock" -u root "$@"; }

start_mariadb() {
  local data="$STATE/mysql"
  if [[ ! -d $data/mysql ]]; then
    mariadb-install-db --user=root --datadir="$data" --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed (see $STATE/log/mariadb-install.log)"
  fi
  start mariadbd mariadbd --no-defaults --user=root --datadir="$data" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --socket="$STATE/run/mysqld.sock" --pid-file="$STATE/run/mariadbd.pid" --skip-log-bin --innodb-buffer-pool-size=64M
  wait_for 60 mariadbd sql -e 'select 1'
  sql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
          CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
          CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

node_ready() { sinfo -h -N -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)$'; }

up() {
  install_packages
  if alive slurmctld && alive slurmd && scontrol ping >/dev/null 2>&1 && node_ready; then
    log "already up"; return 0
  fi
  write_config
  start_munge
  start_mariadb
  start slurmdbd slurmdbd -D
  wait_for 60 slurmdbd sacctmgr -n show cluster
  sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  start slurmctld slurmctld -D -i
  wait_for 60 slurmctld scontrol ping
  start slurmd slurmd -D
  wait_for 60 "node $(hostname -s)" node_ready
  # a node left DOWN/DRAINED by an earlier unclean stop
  scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
  log "up: partition $PARTITION, $(sinfo -h -o '%D node(s), %c CPUs')"
}

stop() {  # stop NAME: SIGTERM by PID, then SIGKILL after 20 s
  local name=$1 pid
  [[ -f "$PIDS/$name" ]] || return 0
  pid="$(cat "$PIDS/$name")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "$name ($pid) ignored SIGTERM: killing"; kill -9 "$pid" 2>/dev/null || true; }
  fi
  rm -f "$PIDS/$name"
}

down() {
  if alive slurmctld; then
    # jobs run under slurmstepd, which outlives slurmd: end them through the controller first
    scancel --full --quiet --cluster="$CLUSTER" --user="$(id -un)" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do [[ -z "$(squeue -h -t R,CG,CF -o %i 2>/dev/null)" ]] && break; sleep 0.5; done
  fi
  for name in slurmd slurmctld slurmdbd mariadbd munged; do stop "$name"; done
  log "down"
}

status() {
  scontrol ping >/dev/null 2>&1 && node_ready && sacct -n -X -S now >/dev/null 2>&1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if status; then log "up"; else log "down"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
