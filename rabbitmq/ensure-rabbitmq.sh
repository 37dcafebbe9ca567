#!/usr/bin/env bash
# Installs (Debian), configures and starts a local RabbitMQ if it is missing or stopped.
# Idempotent: safe to run before every test run. Waits until the broker answers.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf_dir=/etc/rabbitmq

log() { printf '[rabbitmq] %s\n' "$*" >&2; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    log "installing Debian's rabbitmq-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d keeps the package's postinst from trying to start a service manager.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

mkdir -p "$conf_dir"
if ! cmp -s "$here/rabbitmq.conf" "$conf_dir/rabbitmq.conf"; then
    cp "$here/rabbitmq.conf" "$conf_dir/rabbitmq.conf"
    if rabbitmqctl -q status >/dev/null 2>&1; then
        log "configuration changed: restarting"
        rabbitmqctl -q stop >/dev/null 2>&1 || true
    fi
fi

if ! rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting rabbitmq-server"
    # Debian's package runs the broker as the rabbitmq user; the launcher handles that when started as root.
    rabbitmq-server -detached >/dev/null 2>&1 || true
fi

for _ in $(seq 1 120); do
    if rabbitmqctl -q await_startup >/dev/null 2>&1 && rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
        log "ready on 127.0.0.1:5672"
        exit 0
    fi
    sleep 1
done
log "RabbitMQ did not become ready within 120 s; see /var/log/rabbitmq/"
exit 1
