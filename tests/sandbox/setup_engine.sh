#!/usr/bin/env bash
# Idempotent setup for the sandbox tests: bubblewrap, Podman serving the Docker API on
# unix:///tmp/podman.sock, and the sandbox image (built from debootstrap, no registry).
# Safe to call before every test run; each step is skipped when already done.
# Never fails the test run: what cannot be had is skipped by tests/sandbox/conftest.py.
set -u

SOCK="${SANDBOX_PODMAN_SOCK:-/tmp/podman.sock}"
IMAGE="${SANDBOX_IMAGE:-localhost/switchboard-sandbox:py3}"
ROOTFS="${SANDBOX_ROOTFS_DIR:-/tmp/switchboard-sandbox-rootfs}"
LOG="${SANDBOX_SETUP_LOG:-/tmp/switchboard-sandbox-setup.log}"
RUNDIR="${SANDBOX_PODMAN_RUNDIR:-/tmp/switchboard-podman}"

log() { echo "[setup_engine] $*"; }

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
fi

need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = "0" ] || [ -n "$SUDO" ]; then
        log "installing: ${need[*]}"
        $SUDO apt-get -o DPkg::Lock::Timeout=600 update >>"$LOG" 2>&1
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y \
            "${need[@]}" >>"$LOG" 2>&1 || log "apt-get install failed (see $LOG)"
    else
        log "missing ${need[*]} and not root: those tests will be skipped"
    fi
fi

if ! command -v podman >/dev/null 2>&1; then
    log "no podman: Docker-backend tests will be skipped"
    exit 0
fi

# crun fails here on hybrid cgroups and on setting ulimits; runc works.
CONF=/etc/containers/containers.conf
WANT='[containers]\ndefault_ulimits = []\npids_limit = 0\n[engine]\nruntime = "runc"\n'
if ! printf "$WANT" | cmp -s - "$CONF"; then
    $SUDO mkdir -p /etc/containers
    printf "$WANT" | $SUDO tee "$CONF" >/dev/null
fi

ping_engine() {
    curl -fsS --max-time 3 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1
}
if ! ping_engine; then
    log "starting podman system service on unix://$SOCK"
    rm -f "$SOCK"
    # Own working dir: conmon drops files such as "oom" into the service's cwd.
    mkdir -p "$RUNDIR"
    (cd "$RUNDIR" && exec nohup podman system service --time=0 "unix://$SOCK" >>"$LOG" 2>&1) &
    for _ in $(seq 1 50); do ping_engine && break; sleep 0.2; done
    ping_engine || log "podman service did not answer on $SOCK (see $LOG)"
fi

if podman image exists "$IMAGE"; then
    log "image $IMAGE present"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    log "no debootstrap: cannot build $IMAGE"
    exit 0
fi
MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
log "building $IMAGE from debootstrap ($MIRROR), about a minute"
rm -rf "$ROOTFS"
if $SUDO debootstrap --variant=minbase --include=python3 bookworm "$ROOTFS" "$MIRROR" \
        >>"$LOG" 2>&1; then
    tar -C "$ROOTFS" -c . | podman import \
        --change 'CMD ["/usr/bin/python3"]' --change 'WORKDIR /work' - "$IMAGE" >>"$LOG" 2>&1 \
        && log "built $IMAGE" || log "podman import failed (see $LOG)"
else
    log "debootstrap failed (see $LOG)"
fi
rm -rf "$ROOTFS"
exit 0
