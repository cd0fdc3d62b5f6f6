#!/usr/bin/env bash
# fleet.sh — a fleet of N real SSH hosts on one Linux machine, for the aimem.fleet tests.
#
# Each host hI is one OpenSSH server in its own mount + PID + UTS + network namespaces, PID 1 = tini:
#   /etc /var /opt /home /srv /mnt  copy-on-write overlays of the controller's (writes stay per host;
#                                   /var/lib is inside /var)
#   /root /usr/local                per-host directories (start as /etc/skel and empty)
#   /tmp /run /dev/shm              per-host tmpfs
#   everything else (/usr, ...)     the controller's, read-only
#   FLEET_SHARED (opt.)             one directory bind-mounted read-write into every host ("NFS")
# Every host has its own network namespace with its own loopback (so each host's daemon can bind
# 127.0.0.1:9077) and eth0 = SUBNET.(10+i) on a bridge; the controller side is netns NAME-ctl
# (SUBNET.1), which is where the optional release HTTP server runs. Ansible runs in the root
# namespace and reaches the hosts through `ProxyCommand ip netns exec NAME-ctl nc %h %p`.
# A blackhole route keeps SUBNET.0/24 from ever leaving the machine. Nothing is mounted in the
# controller's mount namespace; when a host's PID 1 exits the kernel ends its processes and mounts.
#
# Usage (as root):
#   fleet.sh up [N]            (re)start h1..hN (default 3); tears down this fleet's leftovers first
#   fleet.sh down              stop everything of this fleet and remove its state (idempotent)
#   fleet.sh status            hosts, addresses, PIDs (exit 1: a host is down, 3: the fleet is down)
#   fleet.sh exec HOST CMD...  run CMD as root inside HOST's namespaces WITHOUT SSH (nsenter into its
#                              PID 1): fault injection, e.g. `fleet.sh exec h2 pkill -x sshd`;
#                              restart its sshd with `fleet.sh exec h2 /usr/sbin/sshd`
#   fleet.sh ssh HOST [CMD...] ssh into HOST with the fleet's key (ssh -F $FLEET_DIR/ssh_config)
#   fleet.sh link HOST down|up cut HOST off the fleet network / heal it
#   fleet.sh inventory         print the inventory path
#
# Environment:
#   FLEET_NAME        fleet name, [a-z][a-z0-9]{0,9} (default aimem); prefixes netns, veth, state
#   FLEET_DIR         state dir (default /tmp/fleet-$FLEET_NAME): key, inventory.ini, ssh_config,
#                     per-host upper dirs. Must not be under a dir that is overlaid in the hosts.
#   FLEET_SUBNET      first three octets of the fleet's /24 (default 10.77.0 for the fleet "aimem",
#                     10.77.X derived from the name otherwise). Must be private and unused here.
#   FLEET_PORT        sshd port inside each host (default 22)
#   FLEET_SHARED      empty/0: off; 1: share /srv/nfs/ai-memory; /abs/path: share that mount point
#                     (under /srv, /var, /opt, /home or /mnt). Backed by $FLEET_DIR/shared.
#   FLEET_SERVICE_USER       system user created in every host (default aimem; "" = none)
#   FLEET_SERVICE_HOME       its home (default /var/lib/ai-memory, created 0750 and owned by it)
#   FLEET_HTTP_DIR    if set, serve this directory over HTTP on SUBNET.1:FLEET_HTTP_PORT (default
#                     18080) inside the fleet network; the inventory gets fleet_http_url
#   FLEET_OWNER_PID   if set, a watchdog runs `down` as soon as that process is gone (test runners)
#   FLEET_ANSIBLE_CP_DIRS  control_path dirs whose ssh masters to this fleet's hosts are closed on
#                     up/down (default /tmp/aimem-ansible-cp, as in the repo's ansible.cfg)
#
# Needs: root, util-linux, openssh-server, openssh-client, tini, iproute2, netcat-openbsd, passwd,
#        python3 (HTTP server only).
set -euo pipefail
shopt -s nullglob
export LC_ALL=C

PROG=fleet.sh
SELF=$(readlink -f "$0")
die() { echo "$PROG: $*" >&2; exit 1; }
usage() { sed -n '/^# Usage/,/^# Environment/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

FLEET_NAME=${FLEET_NAME:-aimem}
[[ $FLEET_NAME =~ ^[a-z][a-z0-9]{0,9}$ ]] ||
  die "FLEET_NAME='$FLEET_NAME' is invalid: use 1-10 characters [a-z0-9], starting with a letter (names end up in 15-character interface names)"
NAME=$FLEET_NAME
FLEET_DIR=${FLEET_DIR:-/tmp/fleet-$NAME}
FLEET_DIR=${FLEET_DIR%/}
FLEET_PORT=${FLEET_PORT:-22}
FLEET_HTTP_DIR=${FLEET_HTTP_DIR:-}
FLEET_HTTP_PORT=${FLEET_HTTP_PORT:-18080}
FLEET_SHARED=${FLEET_SHARED:-}
FLEET_SERVICE_USER=${FLEET_SERVICE_USER-aimem}
FLEET_SERVICE_HOME=${FLEET_SERVICE_HOME:-/var/lib/ai-memory}
FLEET_ANSIBLE_CP_DIRS=${FLEET_ANSIBLE_CP_DIRS:-/tmp/aimem-ansible-cp}
MARKER=.aimem-fleet            # file in FLEET_DIR that says "this dir is fleet $NAME's state"
OVERLAYS="etc var opt home srv mnt"
LAN=$NAME-lan CTL=$NAME-ctl
LOCKDIR=/run/lock; [ -d "$LOCKDIR" ] && [ -w "$LOCKDIR" ] || LOCKDIR=/tmp

case $FLEET_DIR in
  ""|/|/tmp|/root|/run|/var/tmp) die "refusing FLEET_DIR='$FLEET_DIR': use a dedicated directory such as /tmp/fleet-$NAME";;
  /*) ;;
  *) die "FLEET_DIR='$FLEET_DIR' must be an absolute path";;
esac
for p in $OVERLAYS; do
  case $FLEET_DIR/ in /$p/*) die "FLEET_DIR='$FLEET_DIR' is under /$p, which is overlaid inside the hosts (overlayfs refuses overlapping layers): use a directory under /tmp";; esac
done
[[ $FLEET_PORT =~ ^[0-9]+$ ]] && [ "$FLEET_PORT" -ge 1 ] && [ "$FLEET_PORT" -le 65535 ] || die "FLEET_PORT='$FLEET_PORT' is not a TCP port"
[[ $FLEET_HTTP_PORT =~ ^[0-9]+$ ]] && [ "$FLEET_HTTP_PORT" -ge 1 ] && [ "$FLEET_HTTP_PORT" -le 65535 ] || die "FLEET_HTTP_PORT='$FLEET_HTTP_PORT' is not a TCP port"

# --- subnet ----------------------------------------------------------------------------------
if [ -z "${FLEET_SUBNET:-}" ]; then
  if [ -f "$FLEET_DIR/subnet" ]; then FLEET_SUBNET=$(cat "$FLEET_DIR/subnet")
  elif [ "$NAME" = aimem ]; then FLEET_SUBNET=10.77.0
  else FLEET_SUBNET=10.77.$(( $(printf %s "$NAME" | cksum | cut -d' ' -f1) % 254 + 1 ))
  fi
fi
SUBNET=$FLEET_SUBNET
[[ $SUBNET =~ ^[0-9]+\.[0-9]+\.[0-9]+\.0(/24)?$ ]] && SUBNET=${SUBNET%.0*}   # accept 10.77.0.0 and 10.77.0.0/24
[[ $SUBNET =~ ^(10\.[0-9]{1,3}|172\.(1[6-9]|2[0-9]|3[01])|192\.168)\.[0-9]{1,3}$ ]] ||
  die "FLEET_SUBNET='$FLEET_SUBNET' must be the first three octets of a private /24 (10.x.y, 172.16-31.y, 192.168.y)"
for o in ${SUBNET//./ }; do [ "$o" -le 255 ] || die "FLEET_SUBNET='$FLEET_SUBNET' is not an IPv4 prefix"; done
CTL_ADDR=$SUBNET.1
host_addr() { echo "$SUBNET.$((10 + $1))"; }

# --- shared dir ------------------------------------------------------------------------------
case $FLEET_SHARED in
  ""|0|no|false) SHARED_MP= ;;
  1|yes|true) SHARED_MP=/srv/nfs/ai-memory ;;
  /*) SHARED_MP=${FLEET_SHARED%/}
      ok=; for p in srv var opt home mnt; do case $SHARED_MP/ in /$p/?*) ok=1;; esac; done
      [ -n "$ok" ] || die "FLEET_SHARED='$FLEET_SHARED': the mount point must be below /srv, /var, /opt, /home or /mnt (per-host writable dirs), e.g. /srv/nfs/ai-memory"
      case $SHARED_MP in *..*|*[[:space:]]*) die "FLEET_SHARED='$FLEET_SHARED' must be a plain absolute path";; esac ;;
  *) die "FLEET_SHARED='$FLEET_SHARED': use 1 (= /srv/nfs/ai-memory) or an absolute path";;
esac
if [ -n "$FLEET_SERVICE_USER" ]; then
  [[ $FLEET_SERVICE_USER =~ ^[a-z_][a-z0-9_-]{0,30}$ ]] || die "FLEET_SERVICE_USER='$FLEET_SERVICE_USER' is not a valid user name"
  case $FLEET_SERVICE_HOME in /var/*|/srv/*|/opt/*|/home/*) ;; *) die "FLEET_SERVICE_HOME='$FLEET_SERVICE_HOME' must be below /var, /srv, /opt or /home";; esac
fi

# --- helpers ---------------------------------------------------------------------------------
need_root() { [ "$(id -u)" = 0 ] || die "must run as root (namespaces, mounts and veths need CAP_SYS_ADMIN/CAP_NET_ADMIN); try: sudo $SELF ${CMD:-}"; }

preflight() {
  need_root
  local missing=() pkgs=() c pkg
  for c in unshare:util-linux nsenter:util-linux setsid:util-linux flock:util-linux \
           sshd:openssh-server ssh:openssh-client ssh-keygen:openssh-client tini:tini \
           ip:iproute2 nc:netcat-openbsd useradd:passwd; do
    pkg=${c#*:} c=${c%%:*}
    if [ "$c" = sshd ]; then [ -x /usr/sbin/sshd ] && continue
    elif command -v "$c" >/dev/null 2>&1; then continue; fi
    missing+=("$c"); [[ " ${pkgs[*]} " == *" $pkg "* ]] || pkgs+=("$pkg")
  done
  if command -v nc >/dev/null 2>&1 && ! nc -h 2>&1 | grep -q OpenBSD; then missing+=("nc (OpenBSD variant)"); pkgs+=(netcat-openbsd); fi
  if [ -n "$FLEET_HTTP_DIR" ] && ! [ -x /usr/bin/python3 ]; then missing+=(/usr/bin/python3); pkgs+=(python3); fi
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}; install with: apt-get install -y --no-install-recommends ${pkgs[*]}"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || die "the kernel has no overlayfs (modprobe overlay failed)"
  if [ -n "$FLEET_HTTP_DIR" ]; then [ -d "$FLEET_HTTP_DIR" ] || die "FLEET_HTTP_DIR='$FLEET_HTTP_DIR' is not a directory"; fi
}

LOCK_FD= LOCK_FDS=()
lock() { # $1 = lock name; held until the script exits or `unlock` (LOCK_FD = last one taken)
  exec {LOCK_FD}>"$LOCKDIR/aimem-fleet.$1.lock"
  LOCK_FDS+=("$LOCK_FD")
  flock -w 120 "$LOCK_FD" || die "timed out waiting for $LOCKDIR/aimem-fleet.$1.lock (another fleet.sh for '$1' is running)"
}
unlock() { exec {LOCK_FD}>&-; }
close_locks() { local fd; for fd in "${LOCK_FDS[@]}"; do eval "exec $fd>&-"; done 2>/dev/null; LOCK_FDS=(); }
# long-lived children must not inherit the lock fds (they would hold the lock forever)

check_dir_ours() {
  [ -e "$FLEET_DIR" ] || return 0
  [ -d "$FLEET_DIR" ] || die "FLEET_DIR=$FLEET_DIR exists and is not a directory; refusing to touch it"
  if [ -f "$FLEET_DIR/$MARKER" ]; then
    local owner; owner=$(cat "$FLEET_DIR/$MARKER")
    [ "$owner" = "$NAME" ] || die "FLEET_DIR=$FLEET_DIR belongs to fleet '$owner', not '$NAME'; set FLEET_NAME=$owner or another FLEET_DIR"
  elif [ -n "$(ls -A "$FLEET_DIR")" ]; then
    die "FLEET_DIR=$FLEET_DIR is not empty and is not a fleet state dir (no $MARKER); refusing to use or delete it: choose another FLEET_DIR"
  fi
}

our_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NAME-(lan|ctl|h[0-9]+)\$" || true; }
cmdline() { tr '\0\n' '  ' < "/proc/$1/cmdline" 2>/dev/null; }
live() { [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
netns_pids() { ip netns pids "$1" 2>/dev/null || true; }

host_index() { # HOST -> index, dies when unknown
  local h=$1; [[ $h =~ ^h?([0-9]+)$ ]] || die "unknown host '$h' (use h1, h2, ...)"
  local i=${BASH_REMATCH[1]}
  [ -d "$FLEET_DIR/h$i" ] || die "host h$i is not part of fleet '$NAME' (FLEET_DIR=$FLEET_DIR); is the fleet up?"
  echo "$i"
}

host_init() { # index -> PID of the host's PID 1 (tini), empty if the host is down
  local f=$FLEET_DIR/h$1/pid pid kids k
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  cmdline "$pid" | grep -q "^unshare .*aimem-fleet:$NAME:h$1 " || return 0
  kids=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || true)
  for k in $kids; do [ "$(cat "/proc/$k/comm" 2>/dev/null)" = tini ] && { echo "$k"; return 0; }; done
  return 0
}

close_ssh_masters() { # $@ = addresses: ask ssh ControlPersist masters for them to exit
  local dir a sock
  for dir in $FLEET_ANSIBLE_CP_DIRS "$FLEET_DIR/cp"; do
    [ -d "$dir" ] || continue
    for a in "$@"; do
      ssh -o ControlPath="$dir/%C" -p "$FLEET_PORT" -O exit "root@$a" >/dev/null 2>&1 || true
    done
  done
}

known_addrs() { # addresses of this fleet's hosts (from state, else from the netns that exist)
  local i
  if [ -f "$FLEET_DIR/hosts" ]; then awk '$2 ~ /^h[0-9]+$/ {print $1}' "$FLEET_DIR/hosts"; return; fi
  for ns in $(our_netns); do [[ $ns =~ -h([0-9]+)$ ]] && host_addr "${BASH_REMATCH[1]}"; done
}

subnet_owner() { # prints the name of another fleet whose ctl netns holds $CTL_ADDR
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E -- '-ctl$' || true); do
    [ "$ns" = "$CTL" ] && continue
    ip -n "$ns" -4 -o addr show 2>/dev/null | grep -q " $CTL_ADDR/" && { echo "${ns%-ctl}"; return; }
  done
  return 0
}

# --- down ------------------------------------------------------------------------------------
fleet_down() {
  local ns p i pids left
  # the watchdog (unless we are it)
  if [ -f "$FLEET_DIR/watchdog.pid" ] && [ -z "${FLEET_IS_WATCHDOG:-}" ]; then
    p=$(cat "$FLEET_DIR/watchdog.pid")
    cmdline "$p" | grep -q "aimem-fleet-watchdog:$NAME " && kill -TERM "$p" 2>/dev/null || true
  fi
  # ssh masters first, while their proxies still run (ansible's ControlPersist would otherwise
  # hand a dead connection to the next fleet with the same addresses and hang it)
  # shellcheck disable=SC2046
  close_ssh_masters $(known_addrs)
  local nss; nss=$(our_netns)
  # ask every host's PID 1 to stop; the kernel then kills the rest of its PID namespace
  for ns in $nss; do
    [[ $ns =~ -h[0-9]+$ ]] || continue
    for p in $(netns_pids "$ns"); do
      [ "$(cat "/proc/$p/comm" 2>/dev/null)" = tini ] && kill -TERM "$p" 2>/dev/null || true
    done
  done
  # the controller side: HTTP server and the ProxyCommand `nc`s of ssh clients
  for p in $(netns_pids "$CTL"); do kill -TERM "$p" 2>/dev/null || true; done
  # wait (max 5 s) until no process is left in any of our namespaces, then KILL what is left
  for i in $(seq 50); do
    left=; for ns in $nss; do [ -n "$(netns_pids "$ns")" ] && { left=1; break; }; done
    [ -z "$left" ] && break
    [ "$i" = 30 ] && for ns in $nss; do for p in $(netns_pids "$ns"); do kill -KILL "$p" 2>/dev/null || true; done; done
    sleep 0.1
  done
  if [ -n "$left" ]; then
    for ns in $nss; do pids=$(netns_pids "$ns"); [ -z "$pids" ] || echo "$PROG: warning: processes still in netns $ns: $pids" >&2; done
  fi
  # unshare parents of hosts that were started without a netns (should not exist) and pid files
  for f in "$FLEET_DIR"/h*/pid; do p=$(cat "$f"); live "$p" && cmdline "$p" | grep -q "aimem-fleet:$NAME:" && kill -KILL "$p" 2>/dev/null || true; done
  for ns in $nss; do ip netns del "$ns" 2>/dev/null || echo "$PROG: warning: could not delete netns $ns" >&2; done
  # the blackhole route, unless another live fleet uses this subnet
  if [ -z "$(subnet_owner)" ]; then ip route del blackhole "$SUBNET.0/24" 2>/dev/null || true; fi
  if [ -e "$FLEET_DIR" ]; then
    check_dir_ours
    rm -rf --one-file-system "$FLEET_DIR"
  fi
}

# --- up --------------------------------------------------------------------------------------
net_check() {
  local other; other=$(subnet_owner)
  [ -z "$other" ] || die "subnet $SUBNET.0/24 is already used by fleet '$other'; set FLEET_SUBNET to a free one (e.g. FLEET_SUBNET=10.78.${RANDOM:0:2})"
  # the subnet must not be a real network of this machine
  if ip -4 -o addr show | awk '{print $4}' | grep -q "^${SUBNET//./\\.}\."; then
    die "subnet $SUBNET.0/24 is configured on an interface of this machine; set FLEET_SUBNET to an unused private /24"
  fi
  local r; r=$(ip -4 route show match "$SUBNET.0/24" | grep -v -E '^(default|blackhole '"${SUBNET//./\\.}"'\.0/24)' || true)
  [ -z "$r" ] || die "subnet $SUBNET.0/24 is routed on this machine ($r); set FLEET_SUBNET to an unused private /24"
}

net_up_common() {
  ip route replace blackhole "$SUBNET.0/24"     # never route the test subnet off the machine
  ip netns add "$LAN"; ip -n "$LAN" link set lo up
  ip -n "$LAN" link add "$NAME-br" type bridge
  ip -n "$LAN" link set "$NAME-br" up
  ip netns add "$CTL"; ip -n "$CTL" link set lo up
  # veths are created directly inside their namespaces: no transient names in the root netns
  ip -n "$LAN" link add "$NAME-ctl" type veth peer name eth0 netns "$CTL"
  ip -n "$LAN" link set "$NAME-ctl" master "$NAME-br" up
  ip -n "$CTL" addr add "$CTL_ADDR/24" dev eth0
  ip -n "$CTL" link set eth0 up
}

net_up_host() { # index
  local i=$1 ns=$NAME-h$1
  ip netns add "$ns"; ip -n "$ns" link set lo up
  ip -n "$LAN" link add "$NAME-h$i" type veth peer name eth0 netns "$ns"
  ip -n "$LAN" link set "$NAME-h$i" master "$NAME-br" up
  ip -n "$ns" addr add "$(host_addr "$i")/24" dev eth0
  ip -n "$ns" link set eth0 up
}

# Runs inside the host's new namespaces (mount, uts, pid, net): $1=host dir $2=index ...
# shellcheck disable=SC2016
HOST_INIT='
set -eu
d=$1 i=$2 fleet=$3 overlays=$4 shared=$5 user=$6 uhome=$7
for p in $overlays; do
  mount -t overlay overlay -o "lowerdir=/$p,upperdir=$d/$p.up,workdir=$d/$p.wk" "/$p"
done
mount --bind "$d/root" /root
mount --bind "$d/usrlocal" /usr/local
if [ -n "$shared" ]; then mkdir -p "$shared"; mount --bind "$fleet/shared" "$shared"; fi
mount -o remount,bind,ro /                     # the rest of the controller: read-only
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
umount -R -l /run/netns 2>/dev/null || true     # other fleets'/hosts' netns handles: not ours
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mkdir -p /run/sshd /run/lock /var/log
hostname "h$i"
if [ -n "$user" ] && ! getent passwd "$user" >/dev/null; then
  useradd --system --user-group --home-dir "$uhome" --no-create-home --shell /usr/sbin/nologin \
    --comment "ai-memory service" "$user"
  install -d -o "$user" -g "$user" -m 0750 "$uhome"
fi
cd /
# PID 1 = tini; sshd is its grandchild so that killing sshd (fault injection) leaves the host up
exec tini -- /bin/sh -c "/usr/sbin/sshd -D -e; echo \"fleet: sshd exited (\$?); host stays up\" >&2; exec sleep infinity" "$0"
'

prepare_host() { # index: host dirs and /etc files, written into the upper dirs from outside
  local i=$1 d=$FLEET_DIR/h$1 p
  for p in $OVERLAYS; do mkdir -p "$d/$p.up" "$d/$p.wk"; done
  mkdir -p "$d"/usrlocal/{bin,sbin,lib,share,etc,include,src} "$d/root" "$d/etc.up/ssh"
  cp -a /etc/skel/. "$d/root/"; chmod 700 "$d/root"
  install -d -m 700 "$d/root/.ssh"
  install -m 600 "$FLEET_DIR/id_ed25519.pub" "$d/root/.ssh/authorized_keys"
  install -m 600 "$FLEET_DIR/ssh_host_ed25519_key" "$d/etc.up/ssh/ssh_host_ed25519_key"
  install -m 644 "$FLEET_DIR/ssh_host_ed25519_key.pub" "$d/etc.up/ssh/ssh_host_ed25519_key.pub"
  cat > "$d/etc.up/ssh/sshd_config" <<EOF
# fleet.sh: sshd of test host h$i (fleet $NAME)
ListenAddress $(host_addr "$i"):$FLEET_PORT
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
UseDNS no
PrintMotd no
MaxSessions 64
MaxStartups 64:30:128
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  { printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'; cat "$FLEET_DIR/hosts"; } > "$d/etc.up/hosts"
  echo "h$i" > "$d/etc.up/hostname"
}

host_start() { # index
  local i=$1 d=$FLEET_DIR/h$1
  ( close_locks; exec setsid ip netns exec "$NAME-h$i" \
    unshare --mount --uts --pid --fork --kill-child=SIGTERM --mount-proc --propagation private \
    /bin/sh -c "$HOST_INIT" "aimem-fleet:$NAME:h$i" \
      "$d" "$i" "$FLEET_DIR" "$OVERLAYS" "$SHARED_MP" "$FLEET_SERVICE_USER" "$FLEET_SERVICE_HOME" \
    </dev/null >"$d/console.log" 2>&1 ) &
  echo $! > "$d/pid"
}

PROXY="ip netns exec $CTL nc %h %p"
ssh_opts() {
  printf '%s' "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ServerAliveInterval=5 -o ServerAliveCountMax=3"
}

wait_ssh() { # index
  local i=$1 addr; addr=$(host_addr "$1")
  for _ in $(seq 150); do
    ssh -q -p "$FLEET_PORT" -i "$FLEET_DIR/id_ed25519" -o BatchMode=yes -o IdentitiesOnly=yes \
      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 \
      -o ProxyCommand="$PROXY" "root@$addr" true 2>/dev/null && return 0
    if ! live "$(cat "$FLEET_DIR/h$i/pid")" || grep -q -E 'Address already in use|Cannot bind|fatal|mount:' "$FLEET_DIR/h$i/console.log" 2>/dev/null; then
      sleep 0.2; break
    fi
    sleep 0.1
  done
  {
    echo "$PROG: host h$i ($addr:$FLEET_PORT) of fleet '$NAME' is not reachable over SSH."
    grep -q 'Address already in use' "$FLEET_DIR/h$i/console.log" 2>/dev/null &&
      echo "$PROG: port $FLEET_PORT is already in use inside h$i; choose another FLEET_PORT"
    echo "--- $FLEET_DIR/h$i/console.log:"; cat "$FLEET_DIR/h$i/console.log" 2>/dev/null
  } >&2
  return 1
}

write_files() { # N
  local n=$1 i
  { printf '%s\tcontroller\n' "$CTL_ADDR"; for i in $(seq 1 "$n"); do printf '%s\th%s\n' "$(host_addr "$i")" "$i"; done; } > "$FLEET_DIR/hosts"
  {
    echo "# written by fleet.sh for fleet '$NAME'"
    echo "[fleet]"
    for i in $(seq 1 "$n"); do echo "h$i ansible_host=$(host_addr "$i")"; done
    echo
    echo "[fleet:vars]"
    echo "ansible_user=root"
    echo "ansible_port=$FLEET_PORT"
    echo "ansible_python_interpreter=/usr/bin/python3"
    echo "ansible_ssh_private_key_file=$FLEET_DIR/id_ed25519"
    echo "ansible_ssh_common_args='$(ssh_opts) -o ProxyCommand=\"$PROXY\"'"
    echo "fleet_name=$NAME"
    echo "fleet_controller_addr=$CTL_ADDR"
    [ -z "$FLEET_SERVICE_USER" ] || { echo "fleet_service_user=$FLEET_SERVICE_USER"; echo "fleet_service_home=$FLEET_SERVICE_HOME"; }
    [ -z "$SHARED_MP" ] || echo "fleet_shared_dir=$SHARED_MP"
    [ -z "$FLEET_HTTP_DIR" ] || echo "fleet_http_url=http://$CTL_ADDR:$FLEET_HTTP_PORT"
  } > "$FLEET_DIR/inventory.ini"
  {
    echo "# written by fleet.sh for fleet '$NAME': ssh -F $FLEET_DIR/ssh_config h1"
    for i in $(seq 1 "$n"); do printf 'Host h%s\n  HostName %s\n' "$i" "$(host_addr "$i")"; done
    printf 'Host *\n  User root\n  Port %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  BatchMode yes\n' "$FLEET_PORT" "$FLEET_DIR/id_ed25519"
    printf '  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ServerAliveInterval 5\n  ServerAliveCountMax 3\n'
    printf '  ProxyCommand %s\n' "$PROXY"
  } > "$FLEET_DIR/ssh_config"
}

http_up() {
  local log=$FLEET_DIR/http.log
  ( close_locks; exec setsid ip netns exec "$CTL" /usr/bin/python3 -m http.server --bind "$CTL_ADDR" \
    --directory "$(readlink -f "$FLEET_HTTP_DIR")" "$FLEET_HTTP_PORT" </dev/null >"$log" 2>&1 ) &
  echo $! > "$FLEET_DIR/http.pid"
  for _ in $(seq 50); do
    ip netns exec "$CTL" nc -z -w 1 "$CTL_ADDR" "$FLEET_HTTP_PORT" 2>/dev/null && return 0
    live "$(cat "$FLEET_DIR/http.pid")" || break
    sleep 0.1
  done
  grep -q 'Address already in use' "$log" && die "HTTP port $CTL_ADDR:$FLEET_HTTP_PORT is already in use; choose another FLEET_HTTP_PORT"
  die "the HTTP server on $CTL_ADDR:$FLEET_HTTP_PORT did not come up; $log: $(cat "$log")"
}

watchdog_up() {
  local owner=$FLEET_OWNER_PID st
  [[ $owner =~ ^[0-9]+$ ]] && [ -d "/proc/$owner" ] || die "FLEET_OWNER_PID=$owner is not a running process"
  st=$(sed 's/.*) //' "/proc/$owner/stat" | cut -d' ' -f20)
  ( close_locks
  FLEET_IS_WATCHDOG=1 FLEET_DIR=$FLEET_DIR FLEET_NAME=$NAME FLEET_SUBNET=$SUBNET FLEET_PORT=$FLEET_PORT \
  exec setsid /bin/sh -c '
    while [ "$(sed "s/.*) //" /proc/$1/stat 2>/dev/null | cut -d" " -f20)" = "$2" ]; do sleep 1; done
    exec "$3" down' "aimem-fleet-watchdog:$NAME" "$owner" "$st" "$SELF" </dev/null >/dev/null 2>&1 ) &
  echo $! > "$FLEET_DIR/watchdog.pid"
}

fleet_up() { # N
  local n=$1 i t0 fails=0
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "N='$n' must be 1..200"
  preflight
  lock "$NAME"
  check_dir_ours
  fleet_down
  mkdir -p "$FLEET_DIR"; chmod 700 "$FLEET_DIR"; echo "$NAME" > "$FLEET_DIR/$MARKER"
  trap 'rc=$?; [ $rc = 0 ] || { echo "$PROG: up failed; tearing fleet '"'$NAME'"' down" >&2; fleet_down >/dev/null 2>&1 || true; }' EXIT
  lock net                                  # subnet check + common net: one fleet at a time
  net_check
  echo "$SUBNET" > "$FLEET_DIR/subnet"
  ssh-keygen -q -t ed25519 -N '' -C "aimem-fleet-$NAME" -f "$FLEET_DIR/id_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C "aimem-fleet-$NAME-host" -f "$FLEET_DIR/ssh_host_ed25519_key"
  [ -z "$SHARED_MP" ] || install -d -m 755 "$FLEET_DIR/shared"
  write_files "$n"
  # shellcheck disable=SC2046
  close_ssh_masters $(known_addrs)           # stale masters of a killed run with these addresses
  net_up_common
  for i in $(seq 1 "$n"); do net_up_host "$i"; done
  unlock
  for i in $(seq 1 "$n"); do prepare_host "$i"; host_start "$i"; done
  local waiters=()
  for i in $(seq 1 "$n"); do wait_ssh "$i" & waiters+=($!); done
  for i in "${waiters[@]}"; do wait "$i" || fails=$((fails + 1)); done
  [ "$fails" = 0 ] || die "$fails of $n hosts did not come up (see above)"
  [ -z "$FLEET_HTTP_DIR" ] || http_up
  [ -z "${FLEET_OWNER_PID:-}" ] || watchdog_up
  trap - EXIT
  echo "fleet '$NAME' up: $n hosts on $SUBNET.0/24, inventory $FLEET_DIR/inventory.ini"
}

status() {
  local d i init rc=0 n=0
  [ -f "$FLEET_DIR/$MARKER" ] || { echo "fleet '$NAME' is down (no $FLEET_DIR)"; [ -z "$(our_netns)" ] || { echo "leftover netns: $(our_netns | tr '\n' ' ')"; return 1; }; return 3; }
  echo "fleet '$NAME': $FLEET_DIR, subnet $SUBNET.0/24, inventory $FLEET_DIR/inventory.ini"
  for d in "$FLEET_DIR"/h*/; do
    d=${d%/}; i=${d##*/h}; n=$((n + 1)); init=$(host_init "$i")
    if [ -n "$init" ]; then echo "h$i up   $(host_addr "$i") pid1=$init"; else echo "h$i DOWN $(host_addr "$i")"; rc=1; fi
  done | sort -V
  [ -z "$SHARED_MP" ] || echo "shared: $FLEET_DIR/shared -> $SHARED_MP"
  [ ! -f "$FLEET_DIR/http.pid" ] || echo "http: http://$CTL_ADDR:$FLEET_HTTP_PORT (pid $(cat "$FLEET_DIR/http.pid"))"
  for d in "$FLEET_DIR"/h*/; do d=${d%/}; [ -n "$(host_init "${d##*/h}")" ] || rc=1; done
  return $rc
}

CMD=${1:-status}; [ $# -gt 0 ] && shift
case $CMD in
  up)   [ $# -le 1 ] || usage; fleet_up "${1:-3}" ;;
  down) [ $# -eq 0 ] || usage; need_root; lock "$NAME"; fleet_down; echo "fleet '$NAME' down" ;;
  status) status ;;
  inventory)
    [ -f "$FLEET_DIR/inventory.ini" ] || die "no inventory: fleet '$NAME' is not up ($FLEET_DIR/inventory.ini missing)"
    echo "$FLEET_DIR/inventory.ini" ;;
  exec)
    [ $# -ge 2 ] || die "usage: $PROG exec HOST CMD..."
    need_root; i=$(host_index "$1"); shift
    init=$(host_init "$i"); [ -n "$init" ] || die "host h$i of fleet '$NAME' is not running"
    exec nsenter --target "$init" --mount --uts --pid --net --root --wd=/ -- \
      env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root USER=root \
      LOGNAME=root LANG=C.UTF-8 HOSTNAME="h$i" TERM="${TERM:-dumb}" "$@" ;;
  ssh)
    [ $# -ge 1 ] || die "usage: $PROG ssh HOST [CMD...]"
    i=$(host_index "$1"); shift
    exec ssh -F "$FLEET_DIR/ssh_config" "h$i" "$@" ;;
  link)
    [ $# -eq 2 ] && [[ $2 =~ ^(up|down)$ ]] || die "usage: $PROG link HOST up|down"
    need_root; i=$(host_index "$1")
    ip -n "$LAN" link set "$NAME-h$i" "$2" ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
