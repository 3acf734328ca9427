#!/usr/bin/env bash
# The container image as a user runs it, against the simulator: `ha-sim` on the host's loopback,
# the image's default command with the token as a podman secret and a config file in the /data
# volume; rows must arrive in the volume's database, /health must answer 200, the image's
# HEALTHCHECK must pass, the process must run as the unprivileged user, and `podman stop` (SIGTERM)
# must end in a clean flush (exit 0). Everything it creates is removed by the names it gave them.
#
#   bash packaging/test-image.sh [IMAGE]      (default localhost/ha-ingestor:latest)
#
# HA_SIM: the ha-sim binary (default: $CARGO_TARGET_DIR/debug/ha-sim, built when missing).
#
# Network: --network host. The container shares the host's network namespace, so the ingestor
# reaches ha-sim on 127.0.0.1 and serves /metrics on a loopback port: all traffic stays on
# loopback. A bridge network would put the container on a private 10.88.x address, and reaching
# the host from there (or a published port forwarded to it) is traffic to a private-range address.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
image="${1:-localhost/ha-ingestor:latest}"
target="${CARGO_TARGET_DIR:-$repo/target}"
sim_bin="${HA_SIM:-$target/debug/ha-sim}"

fail() {
    echo "test-image: $*" >&2
    exit 1
}

command -v podman > /dev/null || fail "podman is not installed (Debian: apt-get install podman buildah runc)"
podman image exists "$image" || fail "no image $image (build it with packaging/build-image.sh)"
if [[ ! -x "$sim_bin" ]]; then
    (cd "$repo" && cargo build -q -p ha-sim --bin ha-sim)
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

name="ha-ingestor-test-$$"
work="$(mktemp -d)"
sim_pid=""
cleanup() {
    local status=$?
    podman rm --force --time 5 "$name" > /dev/null 2>&1 || true
    podman volume rm --force "$name" > /dev/null 2>&1 || true
    podman secret rm "$name" > /dev/null 2>&1 || true
    if [[ -n "$sim_pid" ]]; then
        kill "$sim_pid" 2> /dev/null || true
        wait "$sim_pid" 2> /dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

logs() {
    echo "--- the container's log" >&2
    podman logs "$name" 2>&1 | tail -n 40 >&2 || true
}

sim_port="$(free_port)"
metrics_port="$(free_port)"
: > "$work/sim.log"
"$sim_bin" --bind "127.0.0.1:$sim_port" --rate 50 > "$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 100); do
    grep -q '^http://' "$work/sim.log" && break
    kill -0 "$sim_pid" 2> /dev/null || { cat "$work/sim.log" >&2; fail "ha-sim exited"; }
    sleep 0.1
done
grep -q '^http://' "$work/sim.log" || fail "ha-sim did not start on 127.0.0.1:$sim_port"

# The token as a podman secret (a file in the container, never in the environment or the
# config), and a config file in the volume naming the instance: its rows prove the file was read.
printf 'sim-admin-token' | podman secret create "$name" - > /dev/null
podman volume create "$name" > /dev/null
volume="$(podman volume inspect --format '{{.Mountpoint}}' "$name")"
cat > "$volume/ha-ingestor.toml" <<'EOF'
[[instance]]
name = "container"
token_file = "/run/secrets/ha-token"
EOF
chmod 0644 "$volume/ha-ingestor.toml"

started=$SECONDS
podman run --detach --name "$name" --network host \
    --volume "$name:/data" \
    --secret "$name,target=/run/secrets/ha-token,mode=0400,uid=65532" \
    --env "HASS_SERVER=http://127.0.0.1:$sim_port" \
    --env "HA_INGESTOR_METRICS_ADDR=127.0.0.1:$metrics_port" \
    "$image" > /dev/null 2> "$work/run.err" || { cat "$work/run.err" >&2; fail "podman run failed"; }

rows() {
    python3 - "$volume/ha-ingestor.db" <<'EOF'
import sqlite3, sys
try:
    db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=5)
    print(db.execute("SELECT count(*) FROM states s JOIN entities e ON e.id = s.entity "
                     "WHERE e.instance = 'container'").fetchone()[0])
except sqlite3.Error:
    print(0)
EOF
}

health=""
count=0
for _ in $(seq 300); do
    [[ "$(podman inspect --format '{{.State.Running}}' "$name")" == true ]] || { logs; fail "the container exited"; }
    health="$(curl -s -o "$work/health.json" -w '%{http_code}' "http://127.0.0.1:$metrics_port/health" || true)"
    count="$(rows)"
    [[ "$health" == 200 && "$count" -ge 20 ]] && break
    sleep 0.2
done
[[ "$health" == 200 ]] || { logs; fail "/health answered '$health', not 200: $(cat "$work/health.json" 2> /dev/null)"; }
[[ "$count" -ge 20 ]] || { logs; fail "only $count rows of instance 'container' arrived in the volume's database"; }
echo "test-image: /health 200 and $count rows in /data/ha-ingestor.db after $((SECONDS - started)) s: $(cat "$work/health.json")"

podman healthcheck run "$name" > /dev/null 2>&1 || { logs; fail "the image's HEALTHCHECK (ha-ingestor health) failed"; }
user="$(podman top "$name" user 2> /dev/null | awk 'NR == 2 {print $1}')"
[[ "$user" == ha-ingestor ]] || fail "the process runs as '$user', not ha-ingestor (65532)"
owner="$(stat -c %u "$volume/ha-ingestor.db")"
[[ "$owner" == 65532 ]] || fail "the database belongs to uid $owner, not 65532"

podman stop --time 30 "$name" > /dev/null 2>&1
code="$(podman inspect --format '{{.State.ExitCode}}' "$name")"
[[ "$code" == 0 ]] || { logs; fail "podman stop (SIGTERM) ended with exit code $code, not 0"; }
podman logs "$name" 2>&1 | grep -q "all records committed" || { logs; fail "no 'all records committed' after SIGTERM"; }
echo "test-image: HEALTHCHECK passed, ran as ha-ingestor (65532), SIGTERM flushed and exited 0; $(rows) rows in all"
