#!/usr/bin/env bash
# Checks packaging/systemd/ha-ingestor.service offline, as installed: `systemd-analyze verify` in a
# throwaway root (the unit in /etc/systemd/system, the binary at /usr/local/bin/ha-ingestor where
# ExecStart names it, the system's own units beside them), then the offline security review.
#
#   bash packaging/systemd/verify.sh BINARY
#
# `verify` exits 0 on unknown keys and bad values (it only warns), so any output is a failure here.
# The security review fails above an exposure of 2.0 (systemd's scale: 0 best, 10 worst).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary="${1:?usage: verify.sh BINARY (the ha-ingestor the unit starts)}"
command -v systemd-analyze > /dev/null || { echo "verify: systemd-analyze is not installed" >&2; exit 1; }

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
install -m 0755 "$binary" "$root/usr/local/bin/ha-ingestor"
# ExecReload's kill (procps, on every Debian install but the smallest container roots).
install -D -m 0755 "$(type -P kill)" "$root/bin/kill"
install -m 0644 "$here/ha-ingestor.service" "$root/etc/systemd/system/ha-ingestor.service"

systemd-analyze --version | head -n 1
if ! out="$(systemd-analyze verify --root="$root" ha-ingestor.service 2>&1)" || [[ -n "$out" ]]; then
    echo "$out" >&2
    echo "verify: systemd-analyze verify found problems in ha-ingestor.service (above)" >&2
    exit 1
fi
echo "verify: systemd-analyze verify ha-ingestor.service: no output, exit 0"

if ! review="$(systemd-analyze security --offline=yes --threshold=20 --root="$root" ha-ingestor.service 2>&1)"; then
    echo "$review" >&2
    echo "verify: the unit's exposure is above 2.0 (the review above: ✗ marks what is open)" >&2
    exit 1
fi
grep -F 'Overall exposure level' <<< "$review"
