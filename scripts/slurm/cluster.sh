#!/usr/bin/env bash
# A real single-node Slurm cluster (slurmctld + slurmd + slurmdbd on MariaDB, munge auth) on
# this machine, for testing llenergymeasure's Slurm executor. Debian 12, root, no systemd:
# every daemon is started by hand and stopped by `stop`.
#
#   cluster.sh install   apt packages (slurm-wlm, slurmdbd, munge, mariadb-server) if missing
#   cluster.sh start     write configs, start munge, MariaDB, slurmdbd, slurmctld, slurmd;
#                        wait until the node is idle and sacct answers
#   cluster.sh up        install + start; a no-op when the cluster is already up
#   cluster.sh stop      cancel jobs, stop every daemon that `start` started
#   cluster.sh status    daemons, sinfo, squeue; exit 0 only when the cluster is up
#
# Environment:
#   LLEM_SLURM_GPUS          fake GPUs on the node (default 2; 0 = no GRES)
#   LLEM_SLURM_CPUS          CPUs of the node (default: nproc)
#   LLEM_SLURM_MEM_MB        RealMemory of the node in MB (default: what `slurmd -C` reports)
#   LLEM_SLURM_DEF_MEM_MB    DefMemPerCPU in MB (default: RealMemory / CPUs / 2)
#   LLEM_SLURM_CLUSTER       cluster name (default llem)
#   LLEM_SLURM_PARTITION     partition name (default debug)
#   LLEM_SLURM_TIMEOUT_S     how long `start` waits for the node and sacct (default 60)
#
# The fake GPUs are character devices (major 195, like /dev/nvidiaN) made in a directory outside
# /dev; no GPU driver is involved. Slurm only schedules them and sets CUDA_VISIBLE_DEVICES.
set -euo pipefail

GPUS=${LLEM_SLURM_GPUS:-2}
CLUSTER=${LLEM_SLURM_CLUSTER:-llem}
PARTITION=${LLEM_SLURM_PARTITION:-debug}
TIMEOUT_S=${LLEM_SLURM_TIMEOUT_S:-60}

CONF_DIR=/etc/slurm                 # Debian's slurm reads /etc/slurm/slurm.conf by default
STATE=/var/lib/llem-slurm           # everything else this script owns
LOG_DIR=$STATE/log
RUN_DIR=$STATE/run
GPU_DIR=$STATE/dev
MARK=$CONF_DIR/.llem-cluster        # written with the configs: tells that the script owns them
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=slurm
NODE=$(hostname -s)

now_us() { echo "${EPOCHREALTIME/./}"; }
secs_since() { local d=$(($(now_us) - $1)); printf '%d.%d' $((d / 1000000)) $((d % 1000000 / 100000)); }
T0=$(now_us)
step_t=$T0
log() { printf '[cluster %6ss] %s\n' "$(secs_since "$T0")" "$*"; }
step() { step_t=$(now_us); log "$*"; }
done_step() { log "  done in $(secs_since "$step_t") s"; }

tail_logs() {
  local f n
  for f in slurmctld slurmd slurmdbd mariadb munged; do
    [ -s "$LOG_DIR/$f.log" ] || continue
    case $f in slurm*) n=20 ;; *) n=6 ;; esac
    echo "----- last $n lines of $LOG_DIR/$f.log -----" >&2
    tail -n $n "$LOG_DIR/$f.log" >&2
  done
}

die() {
  echo "cluster.sh: ERROR: $*" >&2
  tail_logs
  echo "cluster.sh: ERROR: $* (logs above, all of them in $LOG_DIR)" >&2
  exit 1
}

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

# --- processes -----------------------------------------------------------------------------

pid_alive() { # pidfile
  local p
  [ -s "$1" ] || return 1
  p=$(cat "$1")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null
}

WATCH_PID=""  # when set, wait_for gives up at once if this process has exited
wait_for() { # seconds description command...
  local limit=$1 what=$2
  shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || die "timed out after ${limit}s waiting for $what"
    if [ -n "$WATCH_PID" ] && ! kill -0 "$WATCH_PID" 2>/dev/null; then
      die "$what: the process (pid $WATCH_PID) exited"
    fi
    sleep 0.2
  done
}

stop_pidfiles() { # name=pidfile...: SIGTERM all of them, wait up to 10 s, then SIGKILL
  local arg name pf p i names=() pids=() pidfiles=() alive
  for arg in "$@"; do
    name=${arg%%=*} pf=${arg#*=}
    if pid_alive "$pf"; then
      p=$(cat "$pf")
      kill -TERM "$p" 2>/dev/null || true
      names+=("$name") pids+=("$p") pidfiles+=("$pf")
    else
      rm -f "$pf"
    fi
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for i in $(seq 1 100); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      log "  ${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
    rm -f "${pidfiles[$i]}"  # the daemon removes its own; this is for one that was killed
    log "  stopped ${names[$i]} (pid ${pids[$i]})"
  done
}

# --- install -------------------------------------------------------------------------------

missing_packages() {
  local p out=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || out+=("$p")
  done
  echo "${out[@]:-}"
}

cmd_install() {
  need_root
  local missing
  missing=$(missing_packages)
  if [ -z "$missing" ]; then
    log "install: all packages present (${PACKAGES[*]})"
    return 0
  fi
  step "install: apt-get install $missing"
  # Packages must not start their daemons while installing (no systemd here, and `start` does
  # that with our configs): a policy-rc.d that says "no" unless one is already there.
  mkdir -p "$LOG_DIR"
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local apt=(apt-get -y -q -o Dpkg::Use-Pty=0 install --no-install-recommends)
  local policy
  # shellcheck disable=SC2086
  policy=$(apt-cache policy $missing 2>/dev/null || true)
  # shellcheck disable=SC2086
  if [ "$(grep -c 'Candidate: [0-9]' <<<"$policy")" -lt "$(wc -w <<<"$missing")" ] ||
    ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" $missing >"$LOG_DIR/apt.log" 2>&1; then
    log "  package lists missing or stale: apt-get update, then retry"
    apt-get -q update >>"$LOG_DIR/apt.log" 2>&1 || true
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" $missing >>"$LOG_DIR/apt.log" 2>&1 || {
      if [ $own_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
      tail -n 30 "$LOG_DIR/apt.log" >&2
      die "apt-get install $missing failed (log: $LOG_DIR/apt.log)"
    }
  fi
  if [ $own_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ -z "$(missing_packages)" ] || die "still missing after install: $(missing_packages)"
  done_step
}

# --- configuration -------------------------------------------------------------------------

write_configs() {
  local hw cpus mem defmem gres_line=""
  mkdir -p "$CONF_DIR" "$LOG_DIR" "$RUN_DIR" "$STATE/spool/slurmctld" "$STATE/spool/slurmd"
  hw=$(slurmd -C 2>/dev/null | head -n 1) || die "slurmd -C failed"
  cpus=${LLEM_SLURM_CPUS:-$(nproc)}
  mem=${LLEM_SLURM_MEM_MB:-$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")}
  [ -n "$mem" ] || die "could not read RealMemory from 'slurmd -C': $hw"
  defmem=${LLEM_SLURM_DEF_MEM_MB:-$((mem / cpus / 2))}

  # Fake GPUs: character devices with NVIDIA's major number. Slurm only needs the files to exist
  # (file-less GRES make the node invalid); their index in File= gives CUDA_VISIBLE_DEVICES.
  rm -rf "$GPU_DIR"
  mkdir -p "$GPU_DIR"
  local i
  for ((i = 0; i < GPUS; i++)); do
    mknod "$GPU_DIR/nvidia$i" c 195 "$i"
  done
  if [ "$GPUS" -gt 0 ]; then gres_line="Gres=gpu:$GPUS"; fi

  cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by llenergymeasure scripts/slurm/cluster.sh: a single-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job's credential otherwise blocks its restart for the default ~2 minutes.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd / cgroup delegation here: track processes by parent id, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=5
# Kill a step whose sampled RSS exceeds its --mem (no cgroup memory limit is available).
JobAcctGatherParams=OverMemoryKill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Without a default, each job gets the node's whole memory and jobs run one at a time.
DefMemPerCPU=$defmem
GresTypes=gpu
MailProg=/bin/true
KillWait=5
ReturnToService=2
SchedulerType=sched/backfill
# Requeued jobs are held for cred_expire+1 s, then wait for a scheduling pass: keep both short.
SchedulerParameters=sched_interval=5,bf_interval=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$cpus RealMemory=$mem $gres_line State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

  {
    echo "# Written by llenergymeasure scripts/slurm/cluster.sh"
    echo "AutoDetect=off"
    if [ "$GPUS" -gt 0 ]; then
      echo "NodeName=$NODE Name=gpu File=$GPU_DIR/nvidia[0-$((GPUS - 1))]"
    fi
  } >"$CONF_DIR/gres.conf"

  cat >"$CONF_DIR/slurmdbd.conf" <<EOF
# Written by llenergymeasure scripts/slurm/cluster.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
  chmod 600 "$CONF_DIR/slurmdbd.conf"
  echo "cpus=$cpus mem=$mem defmem=$defmem gpus=$GPUS" >"$MARK"
  log "  node $NODE: CPUs=$cpus RealMemory=${mem}MB DefMemPerCPU=${defmem}MB gpus=$GPUS"
}

# --- daemons -------------------------------------------------------------------------------

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_ok; then
    log "munge: already running"
    return 0
  fi
  step "munge: start"
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    log "  created /etc/munge/munge.key"
  fi
  chown munge:munge /etc/munge /etc/munge/munge.key
  chmod 700 /etc/munge
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  touch "$LOG_DIR/munged.log"
  chown munge:munge "$LOG_DIR/munged.log"
  runuser -u munge -- /usr/sbin/munged --log-file="$LOG_DIR/munged.log" \
    --pid-file=/run/munge/munged.pid || die "munged did not start"
  cp /run/munge/munged.pid "$RUN_DIR/munged.pid"
  wait_for 10 "munge" munge_ok
  done_step
}

db_ok() { mariadb -u root -e 'SELECT 1' >/dev/null 2>&1; }

start_mariadb() {
  if db_ok; then
    log "mariadb: already running"
  else
    step "mariadb: start"
    if [ ! -d /var/lib/mysql/mysql ]; then
      log "  initialising /var/lib/mysql"
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG_DIR/mariadb-install.log" 2>&1 ||
        die "mariadb-install-db failed (see $LOG_DIR/mariadb-install.log)"
    fi
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    touch "$LOG_DIR/mariadb.log"
    chown mysql:mysql "$LOG_DIR/mariadb.log"
    # Unix socket only: slurmdbd reaches "localhost" through /run/mysqld/mysqld.sock.
    # Its pid file must be in a directory the mysql user can write; ours points at it.
    setsid /usr/sbin/mariadbd --user=mysql --skip-networking \
      --pid-file=/run/mysqld/llem-mariadb.pid --log-error="$LOG_DIR/mariadb.log" \
      </dev/null >/dev/null 2>&1 &
    echo $! >"$RUN_DIR/mariadb.pid"
    WATCH_PID=$! wait_for 30 "mariadb" db_ok
    done_step
  fi
  mariadb -u root <<EOF || die "could not create the accounting database"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
EOF
}

sacctmgr_ok() { sacctmgr -n -P list cluster format=cluster; }

start_slurmdbd() {
  if pid_alive "$RUN_DIR/slurmdbd.pid"; then
    log "slurmdbd: already running"
  else
    step "slurmdbd: start"
    slurmdbd || die "slurmdbd did not start"
    wait_for 30 "slurmdbd to answer" sacctmgr_ok
    done_step
  fi
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    step "sacctmgr: add cluster $CLUSTER"
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
    done_step
  fi
}

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1; }
node_idle() { [ "$(node_state)" = idle ]; }
node_usable() { case "$(node_state)" in idle | mixed | allocated | completing) return 0 ;; esac; return 1; }
sacct_ok() { sacct -n -X -S now-1minute >/dev/null 2>&1 && ! sacct -n -X 2>&1 | grep -qi 'disabled'; }

start_slurm() {
  if pid_alive "$RUN_DIR/slurmctld.pid"; then
    log "slurmctld: already running"
  else
    step "slurmctld: start"
    slurmctld || die "slurmctld did not start"
    wait_for 20 "slurmctld to answer" scontrol ping
    done_step
  fi
  if pid_alive "$RUN_DIR/slurmd.pid"; then
    log "slurmd: already running"
  else
    step "slurmd: start"
    slurmd || die "slurmd did not start"
    done_step
  fi
  step "wait: node $NODE idle, sacct answering"
  local end=$((SECONDS + TIMEOUT_S)) st
  while :; do
    st=$(node_state)
    case "$st" in
      idle | mixed | allocated) break ;;
      down* | drain*)
        # A node left down/drained by an earlier run (state is kept in the spool).
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        ;;
    esac
    if [ $SECONDS -ge $end ]; then
      scontrol show node "$NODE" >&2 || true
      die "node $NODE is '$st', not idle, after ${TIMEOUT_S}s"
    fi
    sleep 0.3
  done
  wait_for "$TIMEOUT_S" "sacct" sacct_ok
  done_step
}

cmd_start() {
  need_root
  [ -z "$(missing_packages)" ] || die "packages missing: $(missing_packages) (run: $0 install)"
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  if all_running && node_usable && sacct_ok; then
    log "start: cluster already up"
    warn_if_reshaped
    return 0
  fi
  step "configs: write $CONF_DIR/{slurm,gres,slurmdbd}.conf"
  if pid_alive "$RUN_DIR/slurmctld.pid" || pid_alive "$RUN_DIR/slurmd.pid"; then
    log "  slurm daemons already running: configs left as they are"
    warn_if_reshaped
  else
    write_configs
  fi
  done_step
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurm
  log "cluster up: $(sinfo -h -o '%P %D %T %G' | head -n 1)"
}

all_running() {
  munge_ok && db_ok && pid_alive "$RUN_DIR/slurmdbd.pid" && pid_alive "$RUN_DIR/slurmctld.pid" &&
    pid_alive "$RUN_DIR/slurmd.pid"
}

warn_if_reshaped() { # the running cluster keeps the shape it was started with
  local running
  running=$(sed -n 's/.*gpus=\([0-9]*\).*/\1/p' "$MARK" 2>/dev/null)
  if [ -n "$running" ] && [ "$running" != "$GPUS" ]; then
    log "  WARNING: running with $running fake GPUs, not LLEM_SLURM_GPUS=$GPUS: '$0 stop' first to change"
  fi
}

cmd_up() {
  need_root
  if [ -z "$(missing_packages)" ] && [ -d "$RUN_DIR" ] && all_running && node_usable && sacct_ok; then
    log "up: cluster already up ($(sinfo -h -o '%P %D %T %G' | head -n 1))"
    warn_if_reshaped
    return 0
  fi
  cmd_install
  cmd_start
  log "up: total $(secs_since "$T0") s"
}

cmd_stop() {
  need_root
  step "stop"
  local ids
  if pid_alive "$RUN_DIR/slurmctld.pid"; then
    ids=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${ids// /}" ]; then
      log "  cancelling jobs: $ids"
      # shellcheck disable=SC2086
      scancel $ids 2>/dev/null || true
      local end=$((SECONDS + 15))
      while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && [ $SECONDS -lt $end ]; do sleep 0.3; done
    fi
  fi
  # The job step daemons of our slurmd, so that none is left running once it is gone.
  local steps="" p
  if pid_alive "$RUN_DIR/slurmd.pid"; then
    steps=$(pgrep -P "$(cat "$RUN_DIR/slurmd.pid")" -x slurmstepd | tr '\n' ' ' || true)
  fi
  # slurmctld sends its last job records to slurmdbd, which writes them to MariaDB; munge
  # authenticates all of them: stop in that order.
  stop_pidfiles slurmd="$RUN_DIR/slurmd.pid" slurmctld="$RUN_DIR/slurmctld.pid"
  for p in $steps; do
    if kill -TERM "$p" 2>/dev/null; then log "  ended leftover slurmstepd $p"; fi
  done
  stop_pidfiles slurmdbd="$RUN_DIR/slurmdbd.pid"
  stop_pidfiles mariadb="$RUN_DIR/mariadb.pid" munged="$RUN_DIR/munged.pid"
  done_step
}

cmd_status() {
  local rc=0 name pf
  for name in munged mariadb slurmdbd slurmctld slurmd; do
    pf=$RUN_DIR/$name.pid
    if pid_alive "$pf"; then
      echo "$name: running (pid $(cat "$pf"))"
    else
      case $name in
        munged) munge_ok && echo "munged: running (not started by this script)" && continue ;;
        mariadb) db_ok && echo "mariadb: running (not started by this script)" && continue ;;
      esac
      echo "$name: stopped"
      rc=1
    fi
  done
  if [ $rc = 0 ]; then
    sinfo -N -o '%N %P %T %c %m %G'
    squeue
    if sacct_ok; then echo "sacct: answering"; else
      echo "sacct: not answering"
      rc=1
    fi
  fi
  return $rc
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  up) cmd_up ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
