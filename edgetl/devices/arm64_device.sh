#!/usr/bin/env bash
# arm64_device.sh - an emulated aarch64 "device" on an x86_64 host, reachable over ssh
# on 127.0.0.1 like a real robot. Run through `edgetl emulator` (edgetl/devices/emulated.py).
#
# What it is: a Debian (bookworm, arm64) root made with debootstrap, executed through
# qemu-user-static via binfmt_misc, with a Python venv (onnxruntime numpy pillow typer
# rich) and an sshd that itself runs under qemu inside the root, so everything a remote
# command touches is aarch64 code.
#
# Usage: arm64_device.sh [--root DIR] [--port N] [--cpu MODEL] COMMAND [ARGS...]
#   build    create / complete the root (idempotent; each step is stamped and skipped
#            when done; re-running with a different ARM64_PIP_PACKAGES re-installs)
#   start    run sshd on 127.0.0.1:PORT inside the root; prints the ssh options
#   stop     stop sshd and every process still running inside the root
#   remove   stop, then delete the root and its ssh material
#   status   say whether it is built / running, and how to reach it
#   info     print the ssh command line (also: `info --config` prints the ssh_config path)
#   ssh ...  run ssh to the device (arguments are passed to ssh after the host)
#   exec ... run a command inside the root directly (no ssh), e.g. `exec uname -m`
#
# Settings (flags win over environment):
#   ARM64_ROOT          root directory            (default ~/.cache/edgetl/arm64-device/root)
#   ARM64_PORT          sshd port on 127.0.0.1     (default 2222)
#   ARM64_CPU           qemu CPU model: cortex-a53 cortex-a57 cortex-a72 cortex-a76
#                       neoverse-n1 a64fx max     (default cortex-a76, ~ Raspberry Pi 5;
#                       "max" advertises SVE/SVE2/SME/i8mm/bf16 which no robot CPU has)
#   ARM64_SUITE         Debian suite               (default bookworm)
#   ARM64_MIRROR        Debian mirror              (default: the one the host's apt uses)
#   ARM64_PIP_PACKAGES  packages for the venv      (default "onnxruntime numpy pillow typer rich")
#   ARM64_PIP_CONSTRAINTS  optional constraints file (host path) for that install
#   ARM64_HOSTNAME      hostname seen on the device (default edgetl-arm64)
#   ARM64_FAKE_CPU      1 (default): arm64 /proc/cpuinfo + minimal /sys for the CPU model;
#                       0: plain /proc, no /sys (onnxruntime then warns on every import)
#
# Layout: ROOT/                 the arm64 root (venv at /opt/venv inside it)
#         ROOT/.edgetl-device/  build stamps, pip freeze, sshd log is in ROOT/var/log
#         ROOT.ssh/             client key, known_hosts, ssh_config (host side)
#
# Design notes (the gotchas this works around):
#  * The real /sys is deliberately NOT mounted in the root: onnxruntime's bundled
#    cpuinfo segfaults under qemu-user when /sys/devices/system/cpu is readable while
#    /proc/cpuinfo is the host's x86 text (qemu 7.2 does not emulate /proc/cpuinfo for
#    aarch64). With /proc alone it works but prints "Error in cpuinfo: ..." on every
#    import. So step_fake_cpu probes the emulated CPU (HWCAP from auxv, MIDR_EL1 via mrs)
#    and in_root bind-mounts an arm64-format /proc/cpuinfo plus a minimal
#    /sys/devices/system/cpu; then cpuinfo initialises cleanly, like on a real board.
#    ARM64_FAKE_CPU=0 turns that off (plain /proc, no /sys).
#  * Everything that runs inside the root does so in a private mount + UTS namespace
#    (unshare), so /proc and /dev mounts never leak into the host mount table and
#    vanish with the last process; the device gets its own hostname.
#  * binfmt entry must carry the F flag so the interpreter is opened at registration
#    time and works inside the chroot (no qemu binary needed in the root).
#  * The host's egress CA certificates (/usr/local/share/ca-certificates) must be
#    installed in the root, or pip's TLS to PyPI fails.
#  * sshd builds a fresh environment for sessions, so PATH (venv first), LANG and
#    QEMU_CPU are set with SetEnv in the sshd config; otherwise python3 would be the
#    bare system one and child processes would fall back to qemu's "max" CPU.
#
# Kept as small functions with one job each so it maps onto a Python module later.
set -euo pipefail

# ---------------------------------------------------------------- settings
ROOT=${ARM64_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/edgetl/arm64-device/root}
PORT=${ARM64_PORT:-2222}
CPU=${ARM64_CPU:-cortex-a76}
SUITE=${ARM64_SUITE:-bookworm}
MIRROR=${ARM64_MIRROR:-}
PIP_PACKAGES=${ARM64_PIP_PACKAGES:-onnxruntime numpy pillow typer rich}
PIP_CONSTRAINTS=${ARM64_PIP_CONSTRAINTS:-}
DEV_HOSTNAME=${ARM64_HOSTNAME:-edgetl-arm64}
INCLUDE_DEBS=python3,python3-venv,python3-pip,openssh-server,ca-certificates
VENV=/opt/venv
DEV_PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BINFMT_NAME=qemu-aarch64
BINFMT_DIR=/proc/sys/fs/binfmt_misc
BINFMT_CONF=/usr/lib/binfmt.d/qemu-aarch64.conf
SSHD_CONF=/etc/ssh/edgetl_sshd_config     # path inside the root
SSHD_PID=/run/edgetl-sshd.pid             # path inside the root
SSHD_LOG=/var/log/edgetl-sshd.log         # path inside the root

log() { printf '[arm64-device] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --root) ROOT=$2; shift 2 ;;
      --port) PORT=$2; shift 2 ;;
      --cpu)  CPU=$2; shift 2 ;;
      -h|--help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) break ;;
    esac
  done
  ROOT=$(realpath -m "$ROOT")
  [ "$ROOT" != / ] || die "refusing to use / as the device root"
  SSH_DIR=$ROOT.ssh
  STAMPS=$ROOT/.edgetl-device
  ARGS=("$@")
}

# ---------------------------------------------------------------- host side
need_root() { [ "$(id -u)" = 0 ] || die "must run as root (binfmt_misc, chroot, mounts)"; }

ensure_host_packages() {
  local missing=()
  command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v unshare >/dev/null || missing+=(util-linux)
  command -v ssh >/dev/null || missing+=(openssh-client)
  [ -e "$BINFMT_CONF" ] || missing+=(qemu-user-static)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing host packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Register qemu-aarch64 with binfmt_misc (the entry Debian ships), forcing the F flag.
ensure_binfmt() {
  [ -e "$BINFMT_DIR/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT_DIR"
  [ "$(cat "$BINFMT_DIR/status")" = enabled ] || echo 1 > "$BINFMT_DIR/status"
  local entry=$BINFMT_DIR/$BINFMT_NAME
  if [ -e "$entry" ] && { ! grep -q '^flags:.*F' "$entry" || grep -qx disabled "$entry"; }; then
    log "re-registering $BINFMT_NAME (existing entry lacks the F flag or is disabled)"
    echo -1 > "$entry"
  fi
  if [ ! -e "$entry" ]; then
    local line flags
    line=$(grep -v '^[[:space:]]*#' "$BINFMT_CONF" | grep -m1 ":$BINFMT_NAME:")
    flags=${line##*:}
    case "$flags" in *F*) ;; *) line="${line}F" ;; esac
    printf '%s' "$line" > "$BINFMT_DIR/register"
    log "registered binfmt $BINFMT_NAME (flags: $(sed -n 's/^flags: //p' "$entry"))"
  fi
}

# The Debian mirror this host's apt uses for $SUITE (deb822 .sources or one-line .list).
detect_mirror() {
  if [ -n "$MIRROR" ]; then echo "$MIRROR"; return; fi
  local m=""
  shopt -s nullglob
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    m=$(awk -v s="$SUITE" '
      function flush() { if (deb && uri != "" && suite_ok) { print uri; found=1; exit } deb=0; uri=""; suite_ok=0 }
      /^[[:space:]]*$/ { flush(); next }
      /^Types:/   { deb = ($0 ~ /(^|[ \t])deb([ \t]|$)/) }
      /^URIs:/    { uri = $2 }
      /^Suites:/  { for (i = 2; i <= NF; i++) if ($i == s) suite_ok=1 }
      END { if (!found) flush() }' "$f")
    [ -n "$m" ] && break
  done
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        sed -e 's/\[[^]]*\]//' | awk -v s="$SUITE" '$1=="deb" && $3==s {print $2; exit}')
  fi
  shopt -u nullglob
  echo "${m:-http://deb.debian.org/debian}"
}

# Mount points at or below a path in the host's mount table, deepest first.
mounts_under() {
  awk -v p="$1" '$5 == p || index($5, p "/") == 1 {print $5}' /proc/self/mountinfo | sort -r
}
unmount_under() {
  local m
  for m in $(mounts_under "$1"); do umount -l "$m" && log "unmounted leftover $m"; done
}

# Run a command inside the root: private mount+UTS namespace, /proc and /dev only,
# clean environment. The real /sys is never mounted (see the notes at the top); when
# ROOT/.edgetl-device/fake-$CPU exists (made by step_fake_cpu) its aarch64-style
# /proc/cpuinfo is bind-mounted over the host's x86 one and its minimal sys/ tree
# (devices/system/cpu/{possible,present,online,cpuN}) onto /sys, so onnxruntime's
# cpuinfo initialises cleanly and sees the emulated CPU's MIDR instead of failing.
in_root() {
  local root=$1; shift
  local fake=""
  [ "${ARM64_FAKE_CPU:-1}" = 1 ] && [ -e "$root/.edgetl-device/fake-$CPU/cpuinfo" ] && fake=$root/.edgetl-device/fake-$CPU
  unshare --mount --uts --propagation private -- /bin/sh -c '
    set -e; r=$1; h=$2; cpu=$3; path=$4; fake=$5; shift 5
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"; mount --make-rslave "$r/dev"
    if [ -n "$fake" ]; then
      mount --bind "$fake/cpuinfo" "$r/proc/cpuinfo"
      mount -o bind,ro "$fake/sys" "$r/sys"
    fi
    hostname "$h"
    exec env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" PATH="$path" QEMU_CPU="$cpu" \
      PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
      PIP_DEFAULT_TIMEOUT=180 ${PIP_INDEX_URL:+PIP_INDEX_URL="$PIP_INDEX_URL"} \
      chroot "$r" "$@"' sh "$root" "$DEV_HOSTNAME" "$CPU" "$DEV_PATH" "$fake" "$@"
}

# PIDs of host processes whose root directory is the device root.
pids_in_root() {
  local want p
  want=$(stat -c %d:%i "$ROOT" 2>/dev/null) || return 0
  for p in /proc/[0-9]*; do
    [ "$(stat -L -c %d:%i "$p/root" 2>/dev/null)" = "$want" ] && echo "${p#/proc/}"
  done
  return 0
}

# ---------------------------------------------------------------- build steps
stamp_done() { [ -e "$STAMPS/$1.done" ]; }
stamp_set()  { mkdir -p "$STAMPS"; printf '%s\n' "${2:-}" > "$STAMPS/$1.done"; }

step_debootstrap() {
  if [ -e "$ROOT/etc/debian_version" ] && [ ! -e "$ROOT/debootstrap" ]; then
    stamp_done debootstrap || stamp_set debootstrap "adopted existing root"
    return
  fi
  [ ! -e "$ROOT" ] || [ -z "$(ls -A "$ROOT")" ] || die "$ROOT exists but is not a finished root; run 'remove' first"
  local mirror t partial=$ROOT.partial
  mirror=$(detect_mirror)
  unmount_under "$partial"; rm -rf --one-file-system "$partial"
  log "debootstrap $SUITE arm64 from $mirror (several minutes under emulation)"
  t=$(now)
  # own mount namespace: debootstrap's /proc and /sys mounts in the target cannot leak
  unshare --mount --propagation private -- debootstrap --arch=arm64 --variant=minbase \
      --include="$INCLUDE_DEBS" "$SUITE" "$partial" "$mirror" > "$partial.log" 2>&1 ||
    { tail -20 "$partial.log" >&2; die "debootstrap failed (full log: $partial.log)"; }
  rmdir "$ROOT" 2>/dev/null || true
  mv "$partial" "$ROOT"; mv "$partial.log" "$ROOT.debootstrap.log"
  stamp_set debootstrap "mirror=$mirror seconds=$(elapsed "$t")"
  log "debootstrap done in $(elapsed "$t") s"
}

step_basics() {
  # name resolution and identity, refreshed on every build/start (host DNS may change)
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  echo "$DEV_HOSTNAME" > "$ROOT/etc/hostname"
  if [ ! -s "$ROOT/etc/hosts" ]; then
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
      "$DEV_HOSTNAME" > "$ROOT/etc/hosts"
  fi
  # no package caches in the root (debootstrap leaves the .debs behind)
  rm -f "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/cache/apt/*.bin
}

# Host's extra CA certs (TLS-intercepting egress) -> root's trust store.
step_ca() {
  local changed=0 c
  shopt -s nullglob
  for c in /usr/local/share/ca-certificates/*.crt; do
    cmp -s "$c" "$ROOT/usr/local/share/ca-certificates/${c##*/}" && continue
    cp "$c" "$ROOT/usr/local/share/ca-certificates/"; changed=1
  done
  shopt -u nullglob
  if [ $changed = 1 ] || ! stamp_done ca; then
    local t; t=$(now)
    in_root "$ROOT" update-ca-certificates > "$STAMPS/ca.log" 2>&1 || { cat "$STAMPS/ca.log" >&2; die "update-ca-certificates failed"; }
    stamp_set ca; log "CA bundle updated in root ($(elapsed "$t") s)"
  fi
}

step_venv() {
  local want t
  want="$PIP_PACKAGES${PIP_CONSTRAINTS:+ -c $(sha256sum < "$PIP_CONSTRAINTS" | cut -c1-16)}"
  if stamp_done venv && [ "$(cat "$STAMPS/venv.done")" = "$want" ]; then return; fi
  if [ ! -x "$ROOT$VENV/bin/python" ]; then
    t=$(now); in_root "$ROOT" /usr/bin/python3 -m venv "$VENV"
    log "venv created in $(elapsed "$t") s"
  fi
  local cargs=()
  if [ -n "$PIP_CONSTRAINTS" ]; then
    cp "$PIP_CONSTRAINTS" "$STAMPS/constraints.txt"; cargs=(-c /.edgetl-device/constraints.txt)
  fi
  log "pip install $PIP_PACKAGES (aarch64 wheels from PyPI)"
  t=$(now)
  # shellcheck disable=SC2086
  in_root "$ROOT" "$VENV/bin/pip" install --no-cache-dir --progress-bar off "${cargs[@]}" $PIP_PACKAGES \
      > "$STAMPS/pip-install.log" 2>&1 ||
    { tail -20 "$STAMPS/pip-install.log" >&2; die "pip install failed (log: $STAMPS/pip-install.log)"; }
  log "pip install done in $(elapsed "$t") s"
  in_root "$ROOT" "$VENV/bin/pip" freeze > "$STAMPS/pip-freeze.txt"
  stamp_set venv "$want"
}

step_ssh_material() {
  mkdir -p "$SSH_DIR"; chmod 700 "$SSH_DIR"
  [ -e "$SSH_DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "edgetl-arm64-client" -f "$SSH_DIR/id_ed25519"
  # host keys: generate on the host (fast) if the root has none
  [ -e "$ROOT/etc/ssh/ssh_host_ed25519_key" ] ||
    ssh-keygen -q -t ed25519 -N '' -C "root@$DEV_HOSTNAME" -f "$ROOT/etc/ssh/ssh_host_ed25519_key"
  install -d -m 700 "$ROOT/root/.ssh"
  install -m 600 "$SSH_DIR/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
  install -d -m 755 "$ROOT/run/sshd"
  cat > "$ROOT$SSHD_CONF" <<EOF
# written by arm64_device.sh
Port $PORT
ListenAddress 127.0.0.1
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile $SSHD_PID
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
LoginGraceTime 120
AcceptEnv LANG LC_*
SetEnv PATH=$DEV_PATH LANG=C.UTF-8 QEMU_CPU=$CPU
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$ROOT/etc/ssh/ssh_host_ed25519_key.pub")" \
    > "$SSH_DIR/known_hosts"
  cat > "$SSH_DIR/config" <<EOF
# ssh -F $SSH_DIR/config $DEV_HOSTNAME
Host $DEV_HOSTNAME
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $SSH_DIR/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $SSH_DIR/known_hosts
  StrictHostKeyChecking yes
  LogLevel ERROR
  ConnectTimeout 60
EOF
}

# Per-CPU-model fake /proc/cpuinfo + /sys/devices/system/cpu, generated by running a
# tiny probe under emulation: HWCAP/HWCAP2 from /proc/self/auxv and MIDR_EL1 read with
# `mrs` (qemu emulates it, HWCAP_CPUID), formatted the way the arm64 kernel does.
step_fake_cpu() {
  local out=$STAMPS/fake-$CPU
  [ -e "$out/cpuinfo" ] && return
  mkdir -p "$STAMPS"
  cat > "$STAMPS/mkfakecpu.py" <<'PY'
import ctypes, mmap, os, struct, sys
ncpu, out = int(sys.argv[1]), sys.argv[2]
HW = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt "
      "fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs "
      "sb paca pacg").split()
HW2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm "
       "svef64mm svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 "
       "smei8i32 smef16f32 smeb16f32 smef32f32 smefa64 wfxt ebf16 sveebf16 cssc rprfm sve2p1").split()
raw = open("/proc/self/auxv", "rb").read()
n = struct.calcsize("L")
aux = dict(struct.unpack("LL", raw[i:i + 2 * n]) for i in range(0, len(raw) - 2 * n + 1, 2 * n))
hw, hw2 = aux.get(16, 0), aux.get(26, 0)
feats = [x for b, x in enumerate(HW) if hw >> b & 1] + [x for b, x in enumerate(HW2) if hw2 >> b & 1]
buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(struct.pack("<II", 0xD5380000, 0xD65F03C0))  # mrs x0, midr_el1; ret
midr = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))()
# "Hardware" (a key arm kernels print and cpuinfo parsers know) says what this is: an emulated CPU
block = ("BogoMIPS\t: 50.00\nFeatures\t: %s\nCPU implementer\t: 0x%02x\nCPU architecture: 8\n"
         "CPU variant\t: 0x%x\nCPU part\t: 0x%03x\nCPU revision\t: %d\n\n") % (
    " ".join(feats), midr >> 24 & 0xFF, midr >> 20 & 0xF, midr >> 4 & 0xFFF, midr & 0xF)
os.makedirs(out + "/sys/devices/system/cpu", exist_ok=True)
with open(out + "/cpuinfo", "w") as f:
    f.write("".join("processor\t: %d\n%s" % (i, block) for i in range(ncpu))
            + "Hardware\t: qemu-user emulation, QEMU_CPU=%s\n" % os.environ.get("QEMU_CPU", "max"))
rng = "0" if ncpu == 1 else "0-%d" % (ncpu - 1)
for name in ("possible", "present", "online"):
    with open(out + "/sys/devices/system/cpu/" + name, "w") as f:
        f.write(rng + "\n")
for i in range(ncpu):
    os.makedirs(out + "/sys/devices/system/cpu/cpu%d" % i, exist_ok=True)
print("HWCAP=0x%x HWCAP2=0x%x MIDR=0x%x features: %s" % (hw, hw2, midr, " ".join(feats)))
PY
  rm -rf "$out.tmp"
  ARM64_FAKE_CPU=0 in_root "$ROOT" /usr/bin/python3 /.edgetl-device/mkfakecpu.py "$(nproc)" "/.edgetl-device/fake-$CPU.tmp" \
    > "$STAMPS/cpu-$CPU.txt"
  mv "$out.tmp" "$out"
  log "emulated CPU $CPU: $(cat "$STAMPS/cpu-$CPU.txt")"
}

cmd_build() {
  need_root; ensure_host_packages; ensure_binfmt
  local t; t=$(now)
  step_debootstrap
  step_basics
  step_ca
  step_venv
  step_fake_cpu
  step_ssh_material
  log "build complete in $(elapsed "$t") s; root size $(du -sh --one-file-system "$ROOT" | cut -f1)"
}

# ---------------------------------------------------------------- run control
is_built() { stamp_done debootstrap && stamp_done venv; }

sshd_pid() {
  local p
  p=$(cat "$ROOT$SSHD_PID" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -d "/proc/$p" ] && [ "$(stat -L -c %d:%i "/proc/$p/root" 2>/dev/null)" = "$(stat -c %d:%i "$ROOT")" ] &&
    echo "$p"
}

# Port / CPU of the running (or last started) sshd, from the config it was started with.
conf_value() { sed -n "s/^$1 //p" "$ROOT$SSHD_CONF" 2>/dev/null; }
running_port() { conf_value Port; }
running_cpu() { sed -n 's/.*QEMU_CPU=\([^ ]*\).*/\1/p' "$ROOT$SSHD_CONF" 2>/dev/null; }

ssh_cmdline() {
  echo "ssh -p $PORT -i $SSH_DIR/id_ed25519 -o IdentitiesOnly=yes -o UserKnownHostsFile=$SSH_DIR/known_hosts -o StrictHostKeyChecking=yes root@127.0.0.1"
}

port_busy() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

cmd_start() {
  need_root
  is_built || die "root not built; run: $0 --root $ROOT build"
  ensure_binfmt
  if p=$(sshd_pid); then
    [ "$(running_port)" = "$PORT" ] && [ "$(running_cpu)" = "$CPU" ] ||
      die "already running on port $(running_port) with cpu $(running_cpu); stop it first"
    log "already running (sshd pid $p)"; cmd_info; return
  fi
  port_busy "$PORT" && die "port $PORT on 127.0.0.1 is already in use"
  step_basics; step_fake_cpu; step_ssh_material
  rm -f "$ROOT$SSHD_PID"
  local t; t=$(now)
  # sshd daemonizes; the namespace (and its /proc,/dev mounts) lives as long as it does
  in_root "$ROOT" /usr/sbin/sshd -f "$SSHD_CONF" -E "$SSHD_LOG"
  local i
  for i in $(seq 1 120); do
    if ssh -F "$SSH_DIR/config" -o BatchMode=yes "$DEV_HOSTNAME" true 2>/dev/null; then break; fi
    sleep 0.5
    [ "$i" = 120 ] && { tail -5 "$ROOT$SSHD_LOG" >&2 || true; die "sshd did not come up"; }
  done
  log "sshd up (pid $(sshd_pid || echo ?), cpu $CPU) in $(elapsed "$t") s"
  cmd_info
}

cmd_stop() {
  need_root
  local p pids i
  if p=$(sshd_pid); then kill -TERM "$p" 2>/dev/null || true; fi
  for i in $(seq 1 20); do
    pids=$(pids_in_root)
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    sleep 0.5
  done
  pids=$(pids_in_root)
  # shellcheck disable=SC2086
  [ -z "$pids" ] || { log "killing stragglers: $pids"; kill -KILL $pids 2>/dev/null || true; sleep 0.5; }
  rm -f "$ROOT$SSHD_PID"
  unmount_under "$ROOT"   # only leftovers from manual runs; ours live in a private namespace
  log "stopped"
}

cmd_remove() {
  need_root
  [ -e "$ROOT" ] || [ -e "$ROOT.partial" ] || [ -e "$SSH_DIR" ] || { log "nothing to remove"; return; }
  if [ -e "$ROOT" ] && [ ! -e "$STAMPS" ] && [ ! -e "$ROOT/etc/debian_version" ] && [ -n "$(ls -A "$ROOT")" ]; then
    die "$ROOT does not look like a device root; not removing"
  fi
  [ -e "$ROOT" ] && cmd_stop
  unmount_under "$ROOT.partial"
  [ -z "$(mounts_under "$ROOT")" ] || die "mounts remain under $ROOT"
  rm -rf --one-file-system "$ROOT" "$ROOT.partial" "$ROOT.partial.log" "$ROOT.debootstrap.log" "$SSH_DIR"
  log "removed $ROOT"
}

cmd_status() {
  if ! is_built; then echo "built: no ($ROOT)"; return 1; fi
  echo "built: yes ($ROOT, $(du -sh --one-file-system "$ROOT" 2>/dev/null | cut -f1))"
  if p=$(sshd_pid); then
    PORT=$(running_port)
    echo "running: yes (sshd pid $p, 127.0.0.1:$PORT, cpu $(running_cpu))"
    echo "ssh: $(ssh_cmdline)"
  else
    echo "running: no"; return 3
  fi
}

cmd_info() {
  if [ "${ARGS[1]:-}" = --config ]; then echo "$SSH_DIR/config"; return; fi
  if sshd_pid >/dev/null; then PORT=$(running_port); fi
  echo "destination: root@127.0.0.1 port $PORT"
  echo "ssh: $(ssh_cmdline)"
  echo "or:  ssh -F $SSH_DIR/config $DEV_HOSTNAME"
}

cmd_ssh() { exec ssh -F "$SSH_DIR/config" "$DEV_HOSTNAME" "${ARGS[@]:1}"; }

cmd_exec() {
  need_root; stamp_done debootstrap || die "root not built"; ensure_binfmt; step_fake_cpu
  in_root "$ROOT" "${ARGS[@]:1}"
}

main() {
  parse_args "$@"
  set -- "${ARGS[@]}"
  [ $# -ge 1 ] || { sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
  case "$1" in
    build) cmd_build ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    remove) cmd_remove ;;
    status) cmd_status ;;
    info) cmd_info ;;
    ssh) cmd_ssh ;;
    exec) cmd_exec ;;
    *) die "unknown command: $1 (build|start|stop|remove|status|info|ssh|exec)" ;;
  esac
}
main "$@"
