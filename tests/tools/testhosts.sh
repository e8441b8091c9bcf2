#!/usr/bin/env bash
# testhosts.sh - real "named hosts" for deployment tests, on one machine.
# (From the herd project's shared test tooling, copied here unchanged below
# this line so that the repository stands alone; tests/deploy.rs runs it.)
#
# Each host is a podman container herd-host-NAME whose PID 1 is a real systemd
# (Debian 12, systemd 252) and whose OpenSSH server listens on 127.0.0.1:PORT;
# the hosts share the machine's network. Each boots from its own throwaway
# overlay of one cached Debian root: hosts share no files, `down` forgets all.
# systemctl, journalctl -u, Type=notify and stop timeouts behave as on a server.
#
# Needs: root; Debian packages podman, runc, openssh-client; debootstrap and the
# Debian mirror for the first build. Tested on cgroup v1 "hybrid" (Debian 12 VM).
# Time: the first `up` builds the root (~50 s, ~225 MB in $TESTHOSTS_CACHE);
# later ones start 3 hosts in ~1.5-2.5 s; `down-all` takes ~1 s.
#
#   testhosts.sh up alpha:2201 beta:2202 gamma   # prints "alpha 127.0.0.1 2201" per host
#   testhosts.sh ssh alpha systemctl is-system-running       # like ssh: args, stdin, exit code
#   ssh -p 2201 -i "$(testhosts.sh key)" -o StrictHostKeyChecking=no root@127.0.0.1 true
#   testhosts.sh ssh-config >cfg; scp -F cfg x.service beta:/etc/systemd/system/
#   testhosts.sh status; testhosts.sh down alpha; testhosts.sh down-all
#
# Environment: TESTHOSTS_CACHE (default /var/cache/herd-testhosts: root/, key pair
# id_ed25519[.pub], debootstrap.log), TESTHOSTS_TIMEOUT (s a host may take to boot,
# default 60), TESTHOSTS_PACKAGES (extra packages for the root), TESTHOSTS_MIRROR,
# TESTHOSTS_SUITE (bookworm), TESTHOSTS_PRIVILEGED=1 (--privileged hosts with a
# tmpfs /var/lib/containers, so podman runs inside them; they can touch the machine:
# TESTHOSTS_PACKAGES="podman crun containernetworking-plugins", `podman run --network=host`).
# Limits: all hosts share one port space; `systemctl reboot` in a host stops it;
# MemoryMax=/CPUQuota= are accepted but not enforced on cgroup v1; changing
# PACKAGES/SUITE/MIRROR rebuilds the root, which needs `down-all` first.
set -euo pipefail

CACHE=${TESTHOSTS_CACHE:-/var/cache/herd-testhosts}
ROOT=$CACHE/root KEY=$CACHE/id_ed25519 T=${TESTHOSTS_TIMEOUT:-60}
SUITE=${TESTHOSTS_SUITE:-bookworm} MIRROR=${TESTHOSTS_MIRROR:-}   # empty: debootstrap's own default mirror
EXTRA=${TESTHOSTS_PACKAGES:-}
PKGS=systemd,systemd-sysv,openssh-server,dbus,iproute2,procps${EXTRA:+,$(tr -s ' \t\n' ',,,' <<<"$EXTRA" | sed 's/^,//; s/,$//')}
STAMP="testhosts-2 $SUITE ${MIRROR:-default-mirror} $PKGS"
HOSTOPTS=() PM=()
[ "${TESTHOSTS_PRIVILEGED:-0}" != 1 ] || HOSTOPTS=(--privileged "--mount=type=tmpfs,destination=/var/lib/containers")
[ -d /run/systemd/system ] || PM=(--cgroup-manager=cgroupfs)   # PID 1 is not systemd
# cgroup v1 "hybrid" machine: give the hosts the cgroup2 tree so their systemd tracks
# units there; in pure v1 mode it misses "cgroup empty" events and a stop right
# after a start hangs until TimeoutStopSec (seen: 8 of 40 start/restart/stop loops).
[ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" != cgroup2fs ] ||
  HOSTOPTS+=(-v /sys/fs/cgroup/unified:/sys/fs/cgroup/unified:rw)
# podman's rootful defaults fail ("error setting rlimit type 7") where root lacks
# CAP_SYS_RESOURCE, as on this VM: stay within our hard limits (nproc: and pid_max).
nf=$(ulimit -Hn) np=$(ulimit -Hu) pidmax=$(cat /proc/sys/kernel/pid_max)
[[ $np != unlimited && $np -lt $pidmax ]] || np=$pidmax
LIMITS=(--ulimit "nofile=1024:$nf" --ulimit "nproc=$np:$np")
SSHOPTS=(-o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5
  -o ServerAliveInterval=5 -o ServerAliveCountMax=3)

say() { echo "testhosts: $*" >&2; }
die() { say "$*"; exit 1; }
pm() { timeout 120 podman "${PM[@]}" "$@" 9>&-; }   # 9>&-: conmon must not inherit the lock
need() {  # need CMD:PACKAGE...
  local c; for c; do command -v "${c%%:*}" >/dev/null || die "${c%%:*} missing (apt-get install ${c#*:})"; done
}
lock() {
  mkdir -p "$CACHE"; exec 9>>"$CACHE/.lock"
  flock -w 900 9 || die "timed out after 900 s waiting for $CACHE/.lock (another testhosts.sh?)"
}
hosts() { pm ps -a --filter name='^herd-host-' --format '{{.Names}}' | sed -n 's/^herd-host-//p'; }
state_of() { pm inspect -f '{{.State.Status}}' "herd-host-$1" 2>/dev/null || echo missing; }
label_of() { pm inspect -f "{{index .Config.Labels \"testhosts.$2\"}}" "herd-host-$1" 2>/dev/null || true; }
port_busy() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
hssh() { timeout 15 ssh -n -p "$1" -i "$2" "${SSHOPTS[@]}" root@127.0.0.1 "${@:3}"; }  # PORT KEY CMD...

ensure_key() {
  [ -s "$KEY" ] && [ -s "$KEY.pub" ] && return 0
  rm -f "$KEY" "$KEY.pub"
  ssh-keygen -q -t ed25519 -N '' -C herd-testhosts -f "$KEY" || die "ssh-keygen failed"
}

ensure_root() {  # debootstrap + configure into root.new, then rename into place
  [ "$(cat "$ROOT/.testhosts-stamp" 2>/dev/null)" = "$STAMP" ] && return 0
  [ -z "$(pm ps -aq --filter label=testhosts.cache="$CACHE")" ] ||
    die "$ROOT is missing or built with other settings, but hosts run on it: down-all first"
  need debootstrap:debootstrap
  local new=$CACHE/root.new log=$CACHE/debootstrap.log s rc=0 u
  for u in "$new" "$CACHE/root.old"; do  # a failed debootstrap may leave /proc mounted
    findmnt -rn -o TARGET | awk -v p="$u/" 'index($0, p) == 1' | sort -r | xargs -r -n1 umount -l
    rm -rf --one-file-system "$u"
  done
  say "building $ROOT with debootstrap $SUITE (first run, about a minute; log $log)"
  timeout 900 debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$new" ${MIRROR:+"$MIRROR"} >"$log" 2>&1 || rc=$?
  [ $rc = 0 ] || die "debootstrap failed (exit $rc$([ $rc = 124 ] && echo ', timed out after 900 s')): $(tail -n 3 "$log" | tr '\n' ' ')"
  s=$new/etc/systemd/system
  cat >"$new/etc/ssh/sshd_config.d/10-testhosts.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
# pam_loginuid cannot write /proc/self/loginuid in a container
UsePAM no
EOF
  mkdir -p "$s/ssh.service.d"
  cat >"$s/ssh.service.d/10-testhosts.conf" <<'EOF'
# The port comes from `podman run --env TESTHOST_PORT=...` (see testhosts.sh).
[Service]
PassEnvironment=TESTHOST_PORT
ExecStartPre=
ExecStartPre=/usr/sbin/sshd -t -o ListenAddress=127.0.0.1:${TESTHOST_PORT}
ExecStart=
ExecStart=/usr/sbin/sshd -D -o ListenAddress=127.0.0.1:${TESTHOST_PORT} $SSHD_OPTS
EOF
  # No consoles or udev in a container; no apt/fstrim/scrub jobs firing mid-test.
  for u in getty@.service console-getty.service systemd-udevd.service systemd-udev-trigger.service \
      apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
      e2scrub_reap.service fstrim.timer podman-auto-update.timer; do ln -sfn /dev/null "$s/$u"; done
  install -d -m 700 "$new/root/.ssh"
  : >"$new/etc/machine-id"   # empty: systemd takes podman's container_uuid, one per host
  ln -sfn /etc/machine-id "$new/var/lib/dbus/machine-id"
  rm -f "$new"/var/cache/apt/archives/*.deb
  echo "$STAMP" >"$new/.testhosts-stamp"
  if [ -d "$ROOT" ]; then mv "$ROOT" "$CACHE/root.old"; fi
  mv "$new" "$ROOT"; rm -rf --one-file-system "$CACHE/root.old"
}

wait_host() {  # NAME PORT: until sshd answers and systemd finished booting
  local end=$((SECONDS + T)) out st
  while [ $SECONDS -lt $end ]; do
    st=$(state_of "$1")
    [ "$st" = running ] || { say "$1: container is $st (see: podman logs herd-host-$1)"; return 1; }
    out=$(hssh "$2" "$KEY" systemctl is-system-running --wait 2>/dev/null || true)
    case $out in
      running) return 0 ;;
      degraded) say "$1: systemd is degraded, failed units: $(hssh "$2" "$KEY" systemctl --failed \
          --no-legend --plain | awk '{printf "%s ", $1}')(testhosts.sh ssh $1 journalctl -b)"; return 1 ;;
    esac
    sleep 0.3
  done
  say "$1: no answer from sshd/systemd on 127.0.0.1:$2 within ${T}s (TESTHOSTS_TIMEOUT)"; return 1
}

cmd_up() {
  [ $# -gt 0 ] || die "usage: testhosts.sh up NAME[:PORT]..."
  lock; ensure_key; ensure_root
  local a n name port p st spec taken=" " ok=() rc=0
  for a; do [[ $a != *:* ]] || taken+="${a#*:} "; done
  for n in $(hosts); do taken+="$(label_of "$n" port) "; done
  for a; do
    name=${a%%:*} port=; [[ $a != *:* ]] || port=${a#*:}
    [[ $name =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || die "bad host name '$name' (a-z, 0-9, '-')"
    [ -z "$port" ] || { [[ $port =~ ^[1-9][0-9]{3,4}$ ]] && ((port >= 1024 && port <= 65535)); } ||
      die "bad port '$port' for $name (1024-65535)"
    st=$(state_of "$name") p=$(label_of "$name" port)
    spec="$STAMP $CACHE ${HOSTOPTS[*]}"
    if [ "$st" = running ] && [ "${port:-$p}" = "$p" ] && [ "$(label_of "$name" spec)" = "$spec" ]; then
      ok+=("$name:$p"); continue   # already up as asked: idempotent
    fi
    if [ "$st" != missing ]; then
      say "$name: recreating (was $st on port $p)"; pm rm -f -t 10 "herd-host-$name" >/dev/null
      port=${port:-$p}
    fi
    if [ -z "$port" ]; then
      port=2201; while [[ $taken == *" $port "* ]] || port_busy $port; do port=$((port + 1)); done
      [ $port -lt 2300 ] || die "$name: no free port in 2201-2299"
    fi
    taken+="$port "
    if port_busy "$port"; then say "$name: 127.0.0.1:$port is already in use"; rc=1; continue; fi
    pm run -d --name "herd-host-$name" --hostname "$name" --systemd=always --network=host "${LIMITS[@]}" \
      --label testhosts.port="$port" --label testhosts.spec="$spec" --env TESTHOST_PORT="$port" \
      --label testhosts.cache="$CACHE" --label testhosts.key="$KEY" \
      -v "$KEY.pub:/root/.ssh/authorized_keys:ro" "${HOSTOPTS[@]}" --rootfs "$ROOT:O" /sbin/init \
      >/dev/null || { say "$name: podman run failed"; pm rm -f "herd-host-$name" >/dev/null; rc=1; continue; }
    ok+=("$name:$port")
  done
  for a in ${ok[@]+"${ok[@]}"}; do
    if wait_host "${a%%:*}" "${a#*:}"; then echo "${a%%:*} 127.0.0.1 ${a#*:}"; else rc=1; fi
  done
  [ $rc = 0 ] || say "some hosts failed (hosts that started are left for a look; down NAME removes them)"
  return $rc
}

cmd_ssh() {
  [ $# -ge 1 ] || die "usage: testhosts.sh ssh NAME [CMD...]"
  local p k; p=$(label_of "$1" port) k=$(label_of "$1" key)
  [ -n "$p" ] || die "no host '$1' (testhosts.sh up $1)"
  shift; exec ssh -p "$p" -i "$k" "${SSHOPTS[@]}" root@127.0.0.1 "$@"
}

cmd_down() {
  local n; for n; do
    if [ "$(state_of "$n")" = missing ]; then say "$n: not there"; continue; fi
    pm rm -f -t 10 "herd-host-$n" >/dev/null || die "podman rm -f herd-host-$n failed"; say "$n: removed"
  done
}

cmd_status() {  # NAME 127.0.0.1 PORT CONTAINER-STATE SYSTEMD-STATE
  local n p st sys; for n in $(hosts); do
    p=$(label_of "$n" port) st=$(state_of "$n") sys=-
    [ "$st" != running ] || sys=$(hssh "$p" "$(label_of "$n" key)" systemctl is-system-running 2>/dev/null || true)
    echo "$n 127.0.0.1 $p $st ${sys:-unreachable}"
  done
}

cmd_ssh_config() {
  local n; for n in $(hosts); do printf 'Host %s\n  HostName 127.0.0.1\n  Port %s\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n\n' \
    "$n" "$(label_of "$n" port)" "$(label_of "$n" key)"; done
}

[ "$(id -u)" = 0 ] || die "must run as root (podman --systemd=always, debootstrap)"
need podman:podman runc:runc ssh:openssh-client ssh-keygen:openssh-client timeout:coreutils flock:util-linux
cmd=${1:-}; [ $# = 0 ] || shift
case $cmd in
  up) cmd_up "$@" ;;
  ssh) cmd_ssh "$@" ;;
  down) [ $# -gt 0 ] || die "usage: testhosts.sh down NAME..."; lock; cmd_down "$@" ;;
  down-all) lock; mapfile -t H < <(hosts); cmd_down ${H[@]+"${H[@]}"}
    [ -z "$(hosts)" ] || die "still there: $(hosts)" ;;
  key) lock; ensure_key; echo "$KEY" ;;
  status) cmd_status ;;
  ssh-config) cmd_ssh_config ;;
  *) die "usage: testhosts.sh up NAME[:PORT]... | ssh NAME [CMD...] | down NAME... | down-all | key | status | ssh-config" ;;
esac
