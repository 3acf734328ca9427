#!/usr/bin/env bash
# Real Home Assistant (2024.3.3) for the project's integration tests, on 127.0.0.1 only.
#
#   scripts/real-ha.sh install   venv with homeassistant==2024.3.3 (idempotent, fast when done)
#   scripts/real-ha.sh start     fresh config, start hass, onboard, wait for RUNNING; prints env.json path
#   scripts/real-ha.sh stop      stop the hass started by `start` (by its PID only)
#   scripts/real-ha.sh restart   stop and start the same onboarded HA (users and tokens survive)
#   scripts/real-ha.sh env       print the path of env.json
#
# Environment:
#   HA_VENV   venv path          (default $HOME/.cache/ha-ingestor/venv)
#   HA_DIR    runtime directory  (default <repo>/target/real-ha: config/, ha.log, pid, env.json)
#   HA_PORT   HTTP port          (default 18123)
#   HA_PYTHON python for the venv, must be 3.11 (default python3)
#   HA_START_TIMEOUT  seconds to wait for HTTP / RUNNING (default 120)
#   HA_INFLUX_URL     when set (http://127.0.0.1:PORT), HA's own `influxdb` integration writes
#                     the entities matching *.native_* to database ha_native there (default
#                     options), so tests can compare its points with ours; the database must exist
#
# env.json (mode 0600) holds the URL, HA version and the credentials/tokens of the
# users admin (owner), user (non-admin) and mfa (non-admin with TOTP); see
# scripts/real_ha_onboard.py.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

HA_VERSION=2024.3.3
# hass runs with --skip-pip, so everything HA would otherwise pip-install at run time is
# pre-installed here, pinned as HA 2024.3.3 pins it:
# - josepy<2: with josepy 2.x every HTTP request answers 500 (acme via hass_nabucasa).
# - pyotp, PyQRCode: REQUIREMENTS of homeassistant/auth/mfa_modules/totp.py (TOTP MFA).
# - the rest: manifest requirements of the integrations this config loads
#   (DEFAULT_INTEGRATIONS + configuration.yaml + their dependencies), same pins as
#   homeassistant/package_constraints.txt. Without them `frontend` fails (it depends on
#   onboarding -> person -> image_upload (Pillow), file_upload (janus), analytics ->
#   hardware (psutil-home-assistant)) and HA 2024.3.3 enters recovery mode on port 8123.
#   Left out on purpose: the requirements of google_translate, met and radio_browser, whose
#   config flows onboarding starts (radio_browser would contact the internet).
PIP_SPECS=(
    "homeassistant==$HA_VERSION" "josepy<2"
    "pyotp==2.8.0" "PyQRCode==1.2.1"
    "home-assistant-frontend==20240307.0"          # frontend (critical integration)
    "SQLAlchemy==2.0.27" "fnv-hash-fast==0.5.0"     # recorder
    "psutil-home-assistant==0.0.1"                 # recorder, hardware
    "Pillow==10.2.0"                               # image_upload
    "janus==1.0.0"                                 # file_upload
    "securetar==2024.2.1"                          # backup
    "ifaddr==0.2.0"                                # network
    "influxdb==5.3.1" "influxdb-client==1.24.0"    # influxdb (only with HA_INFLUX_URL)
)

VENV=$(realpath -m -s "${HA_VENV:-$HOME/.cache/ha-ingestor/venv}")
VENV_PARENT=$(dirname "$VENV")
PIP_LOG="$VENV_PARENT/pip.log"
HA_DIR=$(realpath -m -s "${HA_DIR:-$REPO_DIR/target/real-ha}")
HA_PORT=${HA_PORT:-18123}
HA_PYTHON=${HA_PYTHON:-python3}
START_TIMEOUT=${HA_START_TIMEOUT:-120}
CONFIG_DIR="$HA_DIR/config"
PID_FILE="$HA_DIR/pid"
HA_LOG="$HA_DIR/ha.log"
HA_OUT="$HA_DIR/hass.out"
ENV_JSON="$HA_DIR/env.json"
URL="http://127.0.0.1:$HA_PORT"

say() { printf '[real-ha] %s\n' "$*" >&2; }  # progress on stderr; stdout only carries the env.json path
die() { printf '[real-ha] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

show_log_tail() {
    local f
    # hass also logs to its stdout (hass.out); show that only when ha.log is empty.
    for f in "$HA_LOG" "$HA_OUT"; do
        if [[ -s $f ]]; then
            printf '[real-ha] ---- last 40 lines of %s ----\n' "$f" >&2
            tail -n 40 "$f" >&2
            break
        fi
    done
}

# --------------------------------------------------------------------------- install

venv_ok() {
    [[ -x $VENV/bin/python ]] || return 1
    "$VENV/bin/python" - "${PIP_SPECS[@]}" <<'EOF' >/dev/null 2>&1
import sys
import importlib.metadata as md
assert sys.version_info[:2] == (3, 11)
for spec in sys.argv[1:]:
    if "==" in spec:
        name, version = spec.split("==")
        assert md.version(name) == version, spec
    else:  # "name<major"
        name, major = spec.split("<")
        assert int(md.version(name).split(".")[0]) < int(major), spec
EOF
}

# Is some other process running pip with this venv's interpreter / pip script?
# (e.g. `./venv/bin/pip install ...` started from the venv's parent directory)
foreign_pip_running() {
    local d pid cwd a i is_pip
    local -a args
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        mapfile -d '' -t args 2>/dev/null <"$d/cmdline" || continue
        ((${#args[@]})) || continue
        # pip run as a script (.../pip, pip3, pip3.11) or as `python -m pip`
        # (not e.g. `hass --skip-pip`, which runs from the same venv)
        is_pip=0
        for ((i = 0; i < ${#args[@]} && i < 3; i++)); do
            [[ ${args[i]##*/} =~ ^pip[0-9.]*$ ]] && is_pip=1
            [[ ${args[i]} == -m && ${args[i + 1]:-} =~ ^pip[0-9.]*$ ]] && is_pip=1
        done
        ((is_pip)) || continue
        cwd=$(readlink "$d/cwd" 2>/dev/null) || continue
        for a in "${args[@]:0:2}"; do
            [[ $a == /* ]] || a="$cwd/$a"
            a=$(realpath -m -s "$a")
            [[ $a == "$VENV"/bin/* ]] && return 0
        done
    done
    return 1
}

cmd_install() {
    local t0 waited=0 rc
    t0=$(now)
    if venv_ok; then
        say "install: $VENV already has homeassistant==$HA_VERSION ($(since "$t0") s)"
        return 0
    fi
    mkdir -p "$VENV_PARENT"
    # Serialise our own installs; another tool may install into the same venv without this
    # lock, so also wait for any pip process working on this venv (its log: $PIP_LOG,
    # which ends with `done <rc>` when it is finished).
    exec 9>"$VENV_PARENT/.real-ha-install.lock"
    flock -w 1800 9 || die "install: could not get $VENV_PARENT/.real-ha-install.lock within 1800 s"
    while foreign_pip_running; do
        if ((waited % 30 == 0)); then
            say "install: another pip install into $VENV is running (log: $PIP_LOG); waiting (${waited} s)"
        fi
        ((waited >= 1800)) && die "install: the other pip install into $VENV did not finish within 1800 s"
        sleep 2
        waited=$((waited + 2))
    done
    if venv_ok; then
        say "install: $VENV has homeassistant==$HA_VERSION (after waiting ${waited} s)"
        exec 9>&-
        return 0
    fi
    if [[ ! -x $VENV/bin/python ]]; then
        "$HA_PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' ||
            die "install: $HA_PYTHON is not Python 3.11 (homeassistant $HA_VERSION needs 3.11 here)"
        say "install: creating venv $VENV with $("$HA_PYTHON" --version 2>&1)"
        "$HA_PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' ||
        die "install: $VENV is not a Python 3.11 venv; remove it or set HA_VENV"
    say "install: pip install ${PIP_SPECS[*]} into $VENV (log: $PIP_LOG; ~100 s on a cold cache)"
    rc=0
    {
        echo "real-ha.sh install $(date -Is): ${PIP_SPECS[*]}"
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PIP_SPECS[@]}" || rc=$?
        echo "done $rc"
    } >>"$PIP_LOG" 2>&1
    ((rc == 0)) || { tail -n 30 "$PIP_LOG" >&2; die "install: pip failed with exit code $rc (see $PIP_LOG)"; }
    venv_ok || die "install: pip succeeded but $VENV still lacks the pinned packages (see $PIP_LOG)"
    exec 9>&-
    say "install: done in $(since "$t0") s"
}

# --------------------------------------------------------------------------- stop

pid_is_hass() {
    local pid=$1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'hass'
}

cmd_stop() {
    local pid i
    if [[ ! -f $PID_FILE ]]; then
        say "stop: no pid file ($PID_FILE); nothing to stop"
        return 0
    fi
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || { rm -f "$PID_FILE"; die "stop: $PID_FILE does not hold a PID"; }
    if ! kill -0 "$pid" 2>/dev/null; then
        say "stop: HA (pid $pid) is not running"
        rm -f "$PID_FILE"
        return 0
    fi
    if ! pid_is_hass "$pid"; then
        rm -f "$PID_FILE"
        say "stop: pid $pid is no longer a hass process (PID reused?); not touching it"
        return 0
    fi
    say "stop: sending TERM to HA (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "stop: HA (pid $pid) still running after 20 s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && die "stop: HA (pid $pid) survived KILL"
    fi
    rm -f "$PID_FILE"
    say "stop: HA (pid $pid) stopped"
}

# --------------------------------------------------------------------------- start

write_config() {
    cat >"$CONFIG_DIR/configuration.yaml" <<EOF
# Written by scripts/real-ha.sh; the config dir is recreated on every start.
homeassistant:
  name: RealHA Test
  latitude: 52.3731339
  longitude: 4.8903147
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: NL
  language: en
  internal_url: $URL
http:
  server_host: 127.0.0.1
  server_port: $HA_PORT
  ip_ban_enabled: false
api:
websocket_api:
recorder:
  commit_interval: 1
  purge_keep_days: 3
history:
logbook:
logger: {default: warning, logs: {homeassistant.bootstrap: info, homeassistant.core: info, homeassistant.components.http: info}}
input_number: {test_level: {name: Test level, min: 0, max: 1000000, step: 1, mode: box}}
input_boolean: {test_switch: {name: Test switch}}
counter: {test_counter: {name: Test counter, initial: 0, step: 1}}
template:
  - sensor:
      - name: Test level doubled
        unique_id: realha_test_level_doubled
        state: "{{ states('input_number.test_level') | float(0) * 2 }}"
EOF
    if [[ -n ${HA_INFLUX_URL:-} ]]; then
        local hostport=${HA_INFLUX_URL#http://}
        hostport=${hostport%/}
        cat >>"$CONFIG_DIR/configuration.yaml" <<EOF
influxdb:
  host: ${hostport%:*}
  port: ${hostport##*:}
  database: ha_native
  include:
    entity_globs: ["*.native_*"]
EOF
    fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$HA_PORT") 2>/dev/null; }

fail_start() {
    printf '[real-ha] ERROR: start: %s\n' "$1" >&2
    show_log_tail
    if [[ ${HA_KEEP_ON_FAIL:-0} == 1 ]]; then
        say "start: HA_KEEP_ON_FAIL=1, leaving HA running (pid file $PID_FILE)"
    else
        cmd_stop || true
    fi
    exit 1
}

cmd_start() {
    local t_all t0 pid code deadline
    t_all=$(now)
    [[ $HA_PORT =~ ^[0-9]+$ ]] || die "start: HA_PORT=$HA_PORT is not a number"
    cmd_install
    mkdir -p "$HA_DIR"
    cmd_stop
    if port_in_use; then
        die "start: something else already listens on 127.0.0.1:$HA_PORT (not our HA); set HA_PORT or stop it"
    fi

    rm -rf "$CONFIG_DIR" "$ENV_JSON"
    mkdir -p "$CONFIG_DIR"
    write_config
    [[ -f $HA_LOG ]] && mv -f "$HA_LOG" "$HA_LOG.prev"
    rm -f "$HA_OUT"

    t0=$(now)
    # setsid: own session, so HA outlives the calling shell's process group; it execs
    # hass directly (we are not a group leader), so $! is the hass PID.
    setsid "$VENV/bin/hass" -c "$CONFIG_DIR" --log-file "$HA_LOG" --skip-pip \
        </dev/null >"$HA_OUT" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"
    say "start: hass $HA_VERSION started (pid $pid), config $CONFIG_DIR, log $HA_LOG"

    deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        kill -0 "$pid" 2>/dev/null || fail_start "hass (pid $pid) exited during start-up"
        # In recovery mode HA ignores configuration.yaml (listens on 8123, no onboarding).
        grep -q 'Activating recovery mode' "$HA_LOG" 2>/dev/null &&
            fail_start "HA entered recovery mode (a critical integration failed; missing Python packages?)"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/api/onboarding" || true)
        [[ $code == 200 ]] && break
        ((SECONDS >= deadline)) && fail_start "no HTTP 200 from $URL/api/onboarding within ${START_TIMEOUT} s (last: ${code:-none})"
        sleep 0.25
    done
    pid_is_hass "$pid" || fail_start "pid $pid is not the hass process"
    say "start: HTTP answering after $(since "$t0") s"

    t0=$(now)
    "$VENV/bin/python" "$SCRIPT_DIR/real_ha_onboard.py" onboard --url "$URL" --out "$ENV_JSON" >&2 ||
        fail_start "onboarding failed"
    say "start: onboarding took $(since "$t0") s"

    t0=$(now)
    "$VENV/bin/python" "$SCRIPT_DIR/real_ha_onboard.py" wait-running --env "$ENV_JSON" --timeout "$START_TIMEOUT" >&2 ||
        fail_start "HA did not reach RUNNING"
    kill -0 "$pid" 2>/dev/null || fail_start "hass (pid $pid) exited"
    say "start: ready at $URL after $(since "$t_all") s in total"
    echo "$ENV_JSON"
}

# Stop and start the same onboarded HA again (config, users and long-lived tokens survive; signed
# paths and open connections do not). Tests use it to check reconnects.
cmd_restart() {
    local t0 pid code deadline
    t0=$(now)
    [[ -f $ENV_JSON && -d $CONFIG_DIR ]] || die "restart: no onboarded HA in $HA_DIR; run start first"
    cmd_stop
    [[ -f $HA_LOG ]] && mv -f "$HA_LOG" "$HA_LOG.prev"
    setsid "$VENV/bin/hass" -c "$CONFIG_DIR" --log-file "$HA_LOG" --skip-pip \
        </dev/null >>"$HA_OUT" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"
    deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        kill -0 "$pid" 2>/dev/null || fail_start "hass (pid $pid) exited during restart"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/api/" || true)
        [[ $code == 401 ]] && break
        ((SECONDS >= deadline)) && fail_start "no HTTP answer from $URL/api/ within ${START_TIMEOUT} s after restart"
        sleep 0.1
    done
    "$VENV/bin/python" "$SCRIPT_DIR/real_ha_onboard.py" wait-running --env "$ENV_JSON" --timeout "$START_TIMEOUT" >&2 ||
        fail_start "HA did not reach RUNNING after restart"
    say "restart: HA (pid $pid) RUNNING again after $(since "$t0") s"
}

cmd_env() {
    [[ -f $ENV_JSON ]] || die "env: $ENV_JSON does not exist (run: $0 start)"
    echo "$ENV_JSON"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
restart) cmd_restart ;;
env) cmd_env ;;
*)
    echo "usage: $0 {install|start|stop|restart|env}" >&2
    exit 2
    ;;
esac
