#!/usr/bin/env bash
# Make sure everything the test suite talks to is up: PostgreSQL and Redis on localhost
# (started when installed but stopped), promtool and docker-compose for the deploy tests,
# bubblewrap and Podman for the sandbox tests. Idempotent; each step says what it did.
set -u
here="$(cd "$(dirname "$0")" && pwd)"

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
    if [ -n "$version" ]; then
        echo "[services] starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    else
        echo "[services] PostgreSQL is not installed; integration tests will fail" >&2
    fi
    for _ in $(seq 1 60); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "[services] starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    for _ in $(seq 1 60); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

bash "$here/deploy/setup_tools.sh" || echo "[services] deploy tools unavailable; their tests will say so"
bash "$here/sandbox/setup_engine.sh" || echo "[services] sandbox engine unavailable; its tests will say so"
echo "[services] ready"
