#!/usr/bin/env bash
# Static (musl) release binaries of ha-ingestor for x86_64 and aarch64, built with cargo-zigbuild:
# zig is the C compiler and linker, so the bundled SQLite and ring compile for either target
# without a cross gcc or a musl toolchain.
#
#   bash packaging/build-static.sh [x86_64] [aarch64]        (default: both)
#
# Writes target/dist/ha-ingestor-<arch>-linux-musl (DIST_DIR to change) and prints each size.
# Installs what it needs on first use, then reuses it:
#   - the Rust standard library for <arch>-unknown-linux-musl (rustup target add);
#   - zig and cargo-zigbuild from PyPI, pinned, in a venv (ZIGBUILD_VENV, default
#     ~/.cache/ha-ingestor/zigbuild-<version>).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

ZIGBUILD_VERSION=0.24.1   # cargo-zigbuild
ZIGLANG_VERSION=0.17.1    # zig, as PyPI's ziglang
venv="${ZIGBUILD_VENV:-$HOME/.cache/ha-ingestor/zigbuild-$ZIGBUILD_VERSION-zig-$ZIGLANG_VERSION}"
dist="${DIST_DIR:-$repo/target/dist}"

arches=("$@")
[[ ${#arches[@]} -gt 0 ]] || arches=(x86_64 aarch64)
for arch in "${arches[@]}"; do
    case "$arch" in
        x86_64|aarch64) ;;
        *) echo "build-static: no static build for '$arch' (x86_64 or aarch64)" >&2; exit 2 ;;
    esac
done

installed_targets="$(rustup target list --installed)"
for arch in "${arches[@]}"; do
    triple="$arch-unknown-linux-musl"
    grep -qx "$triple" <<< "$installed_targets" && continue
    echo "build-static: installing the Rust standard library for $triple"
    if ! rustup target add "$triple"; then
        echo "build-static: 'rustup target add $triple' failed (output above): the Rust standard" \
             "library for $triple could not be downloaded, so no static $arch binary can be built" \
             "on this machine. The toolchain's targets come only through rustup." >&2
        exit 1
    fi
done

if [[ ! -x "$venv/bin/cargo-zigbuild" || ! -x "$venv/bin/python-zig" ]]; then
    echo "build-static: installing cargo-zigbuild $ZIGBUILD_VERSION and zig $ZIGLANG_VERSION from PyPI into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "cargo-zigbuild==$ZIGBUILD_VERSION" "ziglang==$ZIGLANG_VERSION"; then
        rm -rf "$venv"
        echo "build-static: pip could not install cargo-zigbuild and ziglang (output above)" >&2
        exit 1
    fi
fi
# cargo-zigbuild runs zig through the venv's python (`python -m ziglang`).
export PATH="$venv/bin:$PATH"

mkdir -p "$dist"
for arch in "${arches[@]}"; do
    triple="$arch-unknown-linux-musl"
    echo "build-static: cargo zigbuild --release --target $triple -p ha-ingestor"
    cargo zigbuild --locked --release --target "$triple" -p ha-ingestor
    out="$dist/ha-ingestor-$arch-linux-musl"
    install -m 0755 "${CARGO_TARGET_DIR:-$repo/target}/$triple/release/ha-ingestor" "$out"
    size="$(stat -c %s "$out")"
    echo "build-static: $out: $size bytes ($(( size / 1024 / 1024 )) MiB)"
done
