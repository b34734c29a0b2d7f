#!/bin/sh
# Install the command-line tools the deploy tests drive: promtool (Debian package
# `prometheus`) and docker-compose (Debian package `docker-compose`). Idempotent: a tool
# already on PATH is left alone, so CI and laptops can call this before every test run.
set -eu

missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"

if [ -z "$missing" ]; then
    echo "setup_tools: promtool and docker-compose already installed"
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
$SUDO apt-get update
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
command -v promtool >/dev/null 2>&1
command -v docker-compose >/dev/null 2>&1
echo "setup_tools: done"
