#!/usr/bin/env bash
# Builds the container image localhost/ha-ingestor:latest with podman from packaging/Containerfile:
# the static binary on `scratch` (no base image to pull: nothing but the binary is in it).
#
#   bash packaging/build-image.sh [--arch x86_64|aarch64] [--binary PATH] [--tag NAME]
#
# --arch: the image's architecture (default: this machine's); an aarch64 image needs no emulator
#   to build (nothing runs during the build). Its default tag is localhost/ha-ingestor:latest-aarch64
#   when the machine is not aarch64.
# --binary: the static ha-ingestor to put in (default: target/dist/ha-ingestor-<arch>-linux-musl,
#   built by packaging/build-static.sh when missing).
# Needs podman (Debian: podman buildah runc). Prints the image's size.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"

arch="$(uname -m)"
binary=""
tag=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --binary) binary="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "build-image: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$arch" in
    x86_64|amd64) arch=x86_64 platform=linux/amd64 ;;
    aarch64|arm64) arch=aarch64 platform=linux/arm64 ;;
    *) echo "build-image: no static build for the architecture '$arch' (x86_64 or aarch64)" >&2; exit 2 ;;
esac
if [[ -z "$tag" ]]; then
    tag=localhost/ha-ingestor:latest
    [[ "$arch" == "$(uname -m)" ]] || tag="$tag-$arch"
fi
if ! command -v podman > /dev/null; then
    echo "build-image: podman is not installed (Debian: apt-get install podman buildah runc)" >&2
    exit 1
fi
if [[ -z "$binary" ]]; then
    binary="${DIST_DIR:-$repo/target/dist}/ha-ingestor-$arch-linux-musl"
    [[ -x "$binary" ]] || bash "$here/build-static.sh" "$arch"
fi
if [[ ! -x "$binary" ]]; then
    echo "build-image: no executable at $binary (build it with packaging/build-static.sh $arch)" >&2
    exit 1
fi
# The scratch base has no libc: only a static binary runs there.
if command -v file > /dev/null && ! file -b "$binary" | grep -qE 'statically linked|static-pie linked'; then
    echo "build-image: $binary is not statically linked; the image needs the musl build (packaging/build-static.sh)" >&2
    exit 1
fi

# The build context: the binary, the user and group (65532, as distroless names its non-root
# user), a world-writable /tmp for SQLite's temporary files, and the empty /data.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/etc" "$context/rootfs/tmp" "$context/data"
install -m 0755 "$binary" "$context/rootfs/usr/local/bin/ha-ingestor"
printf 'root:x:0:0:root:/root:/sbin/nologin\nha-ingestor:x:65532:65532:ha-ingestor:/data:/sbin/nologin\n' \
    > "$context/rootfs/etc/passwd"
printf 'root:x:0:\nha-ingestor:x:65532:\n' > "$context/rootfs/etc/group"
chmod 1777 "$context/rootfs/tmp"
cp "$here/Containerfile" "$context/Containerfile"

version="unknown"
cross=()
if [[ "$arch" == "$(uname -m)" ]]; then
    version="$("$binary" --version | awk '{print $2}')"
else
    cross=(--platform "$platform")
fi
# --format docker: the OCI image format has no HEALTHCHECK (podman would drop it with a warning).
podman build --format docker "${cross[@]}" --build-arg "VERSION=$version" \
    --tag "$tag" --file "$context/Containerfile" "$context"
size="$(podman image inspect --format '{{.Size}}' "$tag")"
echo "built $tag ($arch, version $version): $size bytes ($(( size / 1024 / 1024 )) MiB)"
