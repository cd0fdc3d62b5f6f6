#!/usr/bin/env bash
# fleet-podman.sh — OPTIONAL test hosts with systemd as PID 1 (rootful podman), for the one scenario
# that must exercise a real systemd unit (KillSignal=SIGINT, systemctl, journal). NOT part of
# `make test`; the namespace fleet (fleet.sh) is 2-3x faster and is what the test suite uses.
#
#   fleet-podman.sh image        build localhost/aimem-fleet-systemd:bookworm from the Debian mirror
#                                (once, ~1 min; cached in podman's default storage)
#   fleet-podman.sh up [N]       (re)start hosts h1..hN (default 3), write $FLEET_DIR/inventory.ini
#   fleet-podman.sh down         remove this fleet's containers and state (idempotent)
#   fleet-podman.sh status
#   fleet-podman.sh rmi          remove the image
#
# Each host is a container running /sbin/init (systemd) with sshd listening on $FLEET_PODMAN_NET.i:22
# (loopback of this machine: host networking, see below). The service user (FLEET_SERVICE_USER,
# default aimem, home /var/lib/ai-memory) exists in the image, i.e. on every host, not on the
# controller.
#
# Needs: root, apt-get install -y --no-install-recommends podman runc debootstrap openssh-client
# This kind of machine needs four fixes (tests/fleet/README.md): no CAP_SYS_RESOURCE (podman's default
# nofile=1048576 fails in setrlimit -> lower default_ulimits), cgroup v1/v2 hybrid (crun refuses it
# -> runc), no iptables (netavark bridge fails -> host network), and CONTAINERS_STORAGE_CONF makes
# every run/stop hang 20 s (-> keep the default storage, configure only CONTAINERS_CONF).
#
# Env: FLEET_NAME (default aimempod; container names NAME-hI, label aimem.fleet=NAME),
#      FLEET_DIR (default /tmp/fleet-$FLEET_NAME), FLEET_PODMAN_NET (default 127.0.2: host i = .i),
#      FLEET_IMAGE (default localhost/aimem-fleet-systemd:bookworm), MIRROR (Debian mirror),
#      FLEET_SERVICE_USER / FLEET_SERVICE_HOME (used when building the image).
set -euo pipefail
PROG=fleet-podman.sh
die() { echo "$PROG: $*" >&2; exit 1; }
FLEET_NAME=${FLEET_NAME:-aimempod}
[[ $FLEET_NAME =~ ^[a-z][a-z0-9]{0,19}$ ]] || die "FLEET_NAME='$FLEET_NAME' is invalid: [a-z][a-z0-9]{0,19}"
NAME=$FLEET_NAME
FLEET_DIR=${FLEET_DIR:-/tmp/fleet-$NAME}; FLEET_DIR=${FLEET_DIR%/}
NET=${FLEET_PODMAN_NET:-127.0.2}
[[ $NET =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "FLEET_PODMAN_NET='$NET' must be 127.X.Y (hosts share this machine's loopback)"
IMAGE=${FLEET_IMAGE:-localhost/aimem-fleet-systemd:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SVC_USER=${FLEET_SERVICE_USER-aimem}
SVC_HOME=${FLEET_SERVICE_HOME:-/var/lib/ai-memory}
MARKER=.aimem-fleet-podman
case $FLEET_DIR in ""|/|/tmp|/root|/run|/var/tmp|[!/]*) die "refusing FLEET_DIR='$FLEET_DIR'";; esac

[ "$(id -u)" = 0 ] || die "must run as root (rootful podman); try: sudo $0 $*"
need() {
  local missing=() c
  for c in "$@"; do command -v "${c%%:*}" >/dev/null 2>&1 || missing+=("${c#*:}"); done
  [ ${#missing[@]} -eq 0 ] || die "missing packages: ${missing[*]}; install with: apt-get install -y --no-install-recommends ${missing[*]}"
}
need podman:podman runc:runc ssh:openssh-client ssh-keygen:openssh-client

export CONTAINERS_CONF=${CONTAINERS_CONF:-/tmp/aimem-fleet-podman.containers.conf}
if [ ! -f "$CONTAINERS_CONF" ]; then
  cat > "$CONTAINERS_CONF.new" <<'EOF'
# written by tests/fleet/fleet-podman.sh
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=8192:8192"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  mv "$CONTAINERS_CONF.new" "$CONTAINERS_CONF"
fi
unset CONTAINERS_STORAGE_CONF   # see the header: makes every podman run/stop hang 20 s here

SSH_OPTS=(-o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)

build_image() {
  podman image exists "$IMAGE" && { echo "image $IMAGE exists"; return 0; }
  need debootstrap:debootstrap
  local rootfs; rootfs=$(mktemp -d /var/tmp/aimem-fleet-rootfs.XXXXXX)
  trap "rm -rf --one-file-system '$rootfs'" EXIT
  debootstrap --variant=minbase \
    --include=python3,python3-tomlkit,sqlite3,openssh-server,procps,ca-certificates,systemd-sysv,dbus,curl \
    bookworm "$rootfs" "$MIRROR"
  chroot "$rootfs" systemctl mask getty@.service console-getty.service systemd-logind.service >/dev/null 2>&1 || true
  if [ -n "$SVC_USER" ]; then
    chroot "$rootfs" useradd --system --user-group --home-dir "$SVC_HOME" --no-create-home \
      --shell /usr/sbin/nologin --comment "ai-memory service" "$SVC_USER"
    chroot "$rootfs" install -d -o "$SVC_USER" -g "$SVC_USER" -m 0750 "$SVC_HOME"
  fi
  rm -f "$rootfs/etc/hostname" "$rootfs"/etc/ssh/ssh_host_*
  chroot "$rootfs" apt-get clean
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$IMAGE" >/dev/null
  echo "image $IMAGE built"
}

fleet_down() {
  local ids a
  ids=$(podman ps -aq --filter "label=aimem.fleet=$NAME")
  if [ -f "$FLEET_DIR/hosts" ]; then
    for a in $(awk '{print $1}' "$FLEET_DIR/hosts"); do
      for d in /tmp/aimem-ansible-cp; do [ -d "$d" ] && ssh -o ControlPath="$d/%C" -O exit "root@$a" >/dev/null 2>&1 || true; done
    done
  fi
  [ -z "$ids" ] || podman rm -f -t 5 $ids >/dev/null
  if [ -e "$FLEET_DIR" ]; then
    [ -f "$FLEET_DIR/$MARKER" ] || die "FLEET_DIR=$FLEET_DIR is not a fleet-podman state dir; not removing it"
    rm -rf --one-file-system "$FLEET_DIR"
  fi
}

fleet_up() {
  local n=$1 i d addr
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 50 ] || die "N='$n' must be 1..50"
  podman image exists "$IMAGE" || die "image $IMAGE missing: run '$0 image' first (~1 min, needs the Debian mirror)"
  if [ -e "$FLEET_DIR" ] && [ ! -f "$FLEET_DIR/$MARKER" ] && [ -n "$(ls -A "$FLEET_DIR")" ]; then
    die "FLEET_DIR=$FLEET_DIR exists and is not a fleet-podman state dir; choose another FLEET_DIR"
  fi
  fleet_down
  for i in $(seq 1 "$n"); do
    ss -Hltn "src $NET.$i and sport = :22" | grep -q . && die "$NET.$i:22 is already in use on this machine; set FLEET_PODMAN_NET to a free 127.X.Y"
    ss -Hltn "src 0.0.0.0 and sport = :22" | grep -q . && die "something listens on 0.0.0.0:22 on this machine; it would shadow $NET.$i:22"
  done
  mkdir -p "$FLEET_DIR"; chmod 700 "$FLEET_DIR"; echo "$NAME" > "$FLEET_DIR/$MARKER"
  ssh-keygen -q -t ed25519 -N '' -C "aimem-fleet-$NAME" -f "$FLEET_DIR/id_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C "aimem-fleet-$NAME-host" -f "$FLEET_DIR/ssh_host_ed25519_key"
  : > "$FLEET_DIR/hosts"
  for i in $(seq 1 "$n"); do
    d=$FLEET_DIR/h$i addr=$NET.$i; mkdir -p "$d"
    printf '%s\th%s\n' "$addr" "$i" >> "$FLEET_DIR/hosts"
    printf 'ListenAddress %s:22\nHostKey /etc/ssh/fleet/ssh_host_ed25519_key\nPasswordAuthentication no\nUseDNS no\n' "$addr" > "$d/listen.conf"
    install -d -m 700 "$d/ssh"; install -m 600 "$FLEET_DIR/ssh_host_ed25519_key" "$d/ssh/"
    install -m 600 "$FLEET_DIR/id_ed25519.pub" "$d/authorized_keys"
    # SYS_PTRACE: root reads other users' /proc/<pid>/fd on a real host; podman drops it by default,
    # and without it nothing can prove that no process holds the DB.
    podman run -d --replace --name "$NAME-h$i" --hostname "h$i" --label "aimem.fleet=$NAME" --systemd=always \
      --cap-add SYS_PTRACE -v "$d/listen.conf:/etc/ssh/sshd_config.d/zz-fleet.conf:ro" -v "$d/ssh:/etc/ssh/fleet:ro" \
      -v "$d/authorized_keys:/root/.ssh/authorized_keys:ro" "$IMAGE" /sbin/init >/dev/null
  done
  for i in $(seq 1 "$n"); do
    for _ in $(seq 150); do
      ssh -q -i "$FLEET_DIR/id_ed25519" "${SSH_OPTS[@]}" -o ConnectTimeout=1 "root@$NET.$i" true 2>/dev/null && continue 2
      sleep 0.2
    done
    die "host h$i ($NET.$i:22) did not come up; see: podman logs $NAME-h$i"
  done
  {
    echo "# written by fleet-podman.sh for fleet '$NAME' (systemd hosts)"
    echo "[fleet]"; for i in $(seq 1 "$n"); do echo "h$i ansible_host=$NET.$i"; done
    echo; echo "[fleet:vars]"
    echo "ansible_user=root"
    echo "ansible_python_interpreter=/usr/bin/python3"
    echo "ansible_ssh_private_key_file=$FLEET_DIR/id_ed25519"
    echo "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ServerAliveInterval=5'"
    echo "fleet_name=$NAME"
    [ -z "$SVC_USER" ] || { echo "fleet_service_user=$SVC_USER"; echo "fleet_service_home=$SVC_HOME"; }
  } > "$FLEET_DIR/inventory.ini"
  echo "fleet '$NAME' up: $n systemd hosts on $NET.1-$n, inventory $FLEET_DIR/inventory.ini"
}

case ${1:-} in
  image) build_image ;;
  up) fleet_up "${2:-3}" ;;
  down) fleet_down; echo "fleet '$NAME' down" ;;
  status) podman ps -a --filter "label=aimem.fleet=$NAME" --format '{{.Names}} {{.Status}}' ;;
  rmi) podman rmi -f "$IMAGE" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
