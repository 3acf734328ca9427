#!/usr/bin/env bash
# The unit under a real systemd, as installed on a machine: a Debian bookworm root with systemd
# (mmdebstrap from Debian's packages, cached) booted in a privileged podman container sharing the
# host's network (ha-sim and /metrics on loopback), the static binary and the unit installed as the
# unit's header says. Checks what `systemd-analyze verify` cannot: the sandbox (system call filter,
# ProtectSystem, DynamicUser, StateDirectory) lets the binary run; `systemctl start` returns once
# READY=1 arrives (Type=notify); rows arrive; SIGKILL is restarted; `systemctl stop` flushes and
# exits 0; a refused token (exit 3) is not restarted.
#
#   bash packaging/systemd/test-in-container.sh BINARY
#
# HA_SIM: the ha-sim binary (default: $CARGO_TARGET_DIR/debug/ha-sim). CONTAINERS_CONF as for
# packaging/test-image.sh.
#
# Not checked here: LoadCredential=. systemd inside this container hands no credential to a
# non-root service (Permission denied for any User=, not only this unit's), so a drop-in replaces
# it with a token file the dynamic user can read; `verify` still checks the line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$(dirname "$here")")"
binary="$(realpath "${1:?usage: test-in-container.sh BINARY}")"
sim_bin="${HA_SIM:-${CARGO_TARGET_DIR:-$repo/target}/debug/ha-sim}"
rootfs="${SYSTEMD_ROOTFS:-$HOME/.cache/ha-ingestor/debian-bookworm-systemd.tar}"
image=localhost/ha-ingestor-systemd-test:latest

fail() {
    echo "test-in-container: $*" >&2
    exit 1
}

if [[ ! -s "$rootfs" ]]; then
    command -v mmdebstrap > /dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap > /dev/null
    }
    mkdir -p "$(dirname "$rootfs")"
    # --format=tar: mmdebstrap picks the format from the name otherwise, and *.part is a directory.
    mmdebstrap --quiet --format=tar --variant=minbase --include=systemd,systemd-sysv,dbus bookworm \
        "$rootfs.part" || { rm -rf "$rootfs.part"; fail "mmdebstrap could not build a Debian root with systemd"; }
    mv "$rootfs.part" "$rootfs"
fi
podman image exists "$image" || podman import --quiet "$rootfs" "$image" > /dev/null

name="ha-ingestor-systemd-test-$$"
work="$(mktemp -d)"
sim_pid=""
cleanup() {
    local status=$?
    podman rm --force --time 5 "$name" > /dev/null 2>&1 || true
    if [[ -n "$sim_pid" ]]; then
        kill "$sim_pid" 2> /dev/null || true
        wait "$sim_pid" 2> /dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
sim_port="$(free_port)"
metrics_port="$(free_port)"
: > "$work/sim.log"
"$sim_bin" --bind "127.0.0.1:$sim_port" --rate 50 > "$work/sim.log" 2>&1 &
sim_pid=$!

podman run --detach --name "$name" --privileged --systemd=always --network host \
    "$image" /lib/systemd/systemd > /dev/null 2> "$work/run.err" || { cat "$work/run.err" >&2; fail "podman run failed"; }
inside() { podman exec "$name" "$@"; }
for _ in $(seq 100); do
    state="$(inside systemctl is-system-running 2> /dev/null || true)"
    [[ "$state" == running || "$state" == degraded ]] && break
    sleep 0.2
done
[[ "$state" == running || "$state" == degraded ]] || fail "systemd in the container did not start ($state)"

# As the unit's header installs it.
inside mkdir -p /etc/ha-ingestor /usr/local/bin
podman cp "$binary" "$name:/usr/local/bin/ha-ingestor"
podman cp "$here/ha-ingestor.service" "$name:/etc/systemd/system/ha-ingestor.service"
printf 'HASS_SERVER=http://127.0.0.1:%s\nHA_INGESTOR_METRICS_ADDR=127.0.0.1:%s\n' "$sim_port" "$metrics_port" > "$work/env"
podman cp "$work/env" "$name:/etc/ha-ingestor/env"
# The credential's stand-in (see the header).
inside sh -c 'printf sim-admin-token > /etc/ha-ingestor/test-token && chmod 0644 /etc/ha-ingestor/test-token
    mkdir -p /etc/systemd/system/ha-ingestor.service.d
    printf "[Service]\nLoadCredential=\nEnvironment=HASS_TOKEN_FILE=/etc/ha-ingestor/test-token\n" \
        > /etc/systemd/system/ha-ingestor.service.d/test-token.conf
    systemctl daemon-reload'

show() { inside systemctl show ha-ingestor -p "$1" --value; }
journal() {
    echo "--- the service's journal" >&2
    inside journalctl -u ha-ingestor --no-pager 2>&1 | tail -n 30 >&2 || true
}

# Type=notify: `systemctl start` returns once READY=1 has arrived.
inside systemctl start ha-ingestor || { journal; fail "systemctl start ha-ingestor failed"; }
[[ "$(show ActiveState)/$(show SubState)" == active/running ]] || { journal; fail "not active/running after start"; }
[[ "$(show User)" == ha-ingestor && "$(show DynamicUser)" == yes ]] || fail "not the dynamic user"
health=""
for _ in $(seq 150); do
    health="$(curl -s -o "$work/health.json" -w '%{http_code}' "http://127.0.0.1:$metrics_port/health" || true)"
    [[ "$health" == 200 ]] && grep -q '"rows_committed":[1-9]' "$work/health.json" && break
    sleep 0.2
done
grep -q '"rows_committed":[1-9]' "$work/health.json" 2> /dev/null || { journal; fail "/health answered '$health' with no rows committed"; }
inside test -s /var/lib/private/ha-ingestor/ha-ingestor.db || fail "no database in the StateDirectory"
echo "test-in-container: started (READY=1), rows arriving, database in /var/lib/ha-ingestor"

# Restart=on-failure: SIGKILL is a failure.
pid="$(show MainPID)"
inside systemctl kill --signal=KILL ha-ingestor
for _ in $(seq 100); do
    [[ "$(show NRestarts)" == 1 && "$(show SubState)" == running ]] && break
    sleep 0.2
done
[[ "$(show NRestarts)" == 1 && "$(show MainPID)" != "$pid" ]] || { journal; fail "SIGKILL was not followed by a restart"; }

# SIGTERM: the flush, exit 0.
inside systemctl stop ha-ingestor
[[ "$(show Result)" == success && "$(show ExecMainStatus)" == 0 ]] || { journal; fail "systemctl stop did not end in exit 0"; }
inside journalctl -u ha-ingestor --no-pager | grep -q "all records committed" || { journal; fail "no flush on stop"; }

# A refused token: exit 3, RestartPreventExitStatus keeps it down.
inside sh -c 'printf wrong-token > /etc/ha-ingestor/test-token'
inside systemctl start ha-ingestor || true
# A pending restart shows as activating/auto-restart; failed means systemd will not restart it.
for _ in $(seq 150); do
    [[ "$(show ActiveState)" == failed ]] && break
    sleep 0.2
done
[[ "$(show ActiveState)" == failed && "$(show ExecMainStatus)" == 3 && "$(show NRestarts)" == 0 ]] \
    || { journal; fail "a refused token: $(show ActiveState), exit $(show ExecMainStatus), $(show NRestarts) restarts (want failed, 3, 0)"; }
echo "test-in-container: SIGKILL restarted, stop flushed with exit 0, a refused token (exit 3) stayed down"
