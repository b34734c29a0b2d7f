#!/bin/sh
# Install the command-line tools the deploy and alert tests drive: promtool and prometheus
# (Debian package `prometheus`), alertmanager and amtool (Debian package
# `prometheus-alertmanager`, whose server is /usr/bin/prometheus-alertmanager) and
# docker-compose (Debian package `docker-compose`). Idempotent: a tool already on PATH is
# left alone, so CI and laptops can call this before every test run.
set -eu

missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v amtool >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"

if [ -z "$missing" ]; then
    echo "setup_tools: promtool, amtool and docker-compose already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "setup_tools: need root (or sudo) to install:$missing" >&2
        exit 1
    fi
else
    SUDO=""
fi

echo "setup_tools: installing$missing"
# Other installs may hold the dpkg lock for a while: wait for it rather than fail.
APT="apt-get -o DPkg::Lock::Timeout=600"
$SUDO $APT update
# The packages' post-install scripts start their daemons where an init system runs; the
# tests start their own on free ports, so keep them from starting (policy-rc.d exit 101).
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
fi
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO $APT install -y --no-install-recommends $missing || status=$?
if [ -n "$created_policy" ]; then
    $SUDO rm -f "$policy"
fi
[ "${status:-0}" -eq 0 ]
command -v promtool >/dev/null 2>&1
command -v prometheus >/dev/null 2>&1
# Debian names the server prometheus-alertmanager; upstream tarballs name it alertmanager.
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1
command -v amtool >/dev/null 2>&1
command -v docker-compose >/dev/null 2>&1
echo "setup_tools: done"
