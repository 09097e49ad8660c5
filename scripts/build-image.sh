#!/usr/bin/env bash
# Build the Ringtail image without pulling anything: a FROM-scratch image holding the
# host-built binary, the shared libraries it links (from ldd, the dynamic loader
# included) and a few files of /etc. For machines without registry access; elsewhere
# ./Dockerfile is the conventional multi-stage build.
#
#     scripts/build-image.sh [--build]     # --build: `cargo build --release` first
#
# Environment:
#   RINGTAIL_BIN    the binary to package   [target/release/ringtail]
#   RINGTAIL_IMAGE  the tag to build        [ringtail:local]
#
# Only a small temporary folder is sent to Docker as the build context (never target/).
# The image runs the binary with the very libraries it was linked against here, so it
# works wherever the host's architecture does.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${RINGTAIL_BIN:-$REPO/target/release/ringtail}"
IMAGE="${RINGTAIL_IMAGE:-ringtail:local}"
RUN_UID=10001

die() { echo "build-image: $*" >&2; exit 1; }

case "${1:-}" in
    --build) (cd "$REPO" && cargo build --release --bin ringtail) ;;
    "") ;;
    *) die "unknown argument ${1}; usage: $0 [--build]" ;;
esac

command -v docker >/dev/null || die "docker is required"
command -v ldd >/dev/null || die "ldd is required (glibc's libc-bin)"
[[ -x "$BIN" ]] || die "no binary at $BIN: run \`cargo build --release\` (or $0 --build)"

CTX="$(mktemp -d "${TMPDIR:-/tmp}/ringtail-image.XXXXXX")"
trap 'rm -rf "$CTX"' EXIT
ROOT="$CTX/rootfs"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc" "$ROOT/tmp"
chmod 1777 "$ROOT/tmp"

# Copies a host file to the same path in the image, following symlinks.
stage() {
    mkdir -p "$ROOT$(dirname "$1")"
    cp -L "$1" "$ROOT$1"
}

cp -L "$BIN" "$ROOT/usr/local/bin/ringtail"

# ldd lines: "libx.so.1 => /path/libx.so.1 (0x..)", "/lib64/ld-linux-x86-64.so.2 (0x..)"
# (the loader, at the path written in the binary), "linux-vdso.so.1 (0x..)" (the kernel's).
ldd_out="$(ldd "$BIN" 2>&1)" || true
if grep -q "not found" <<<"$ldd_out"; then
    die "missing libraries for $BIN:"$'\n'"$ldd_out"
fi
libs=()
if ! grep -qE "not a dynamic executable|statically linked" <<<"$ldd_out"; then
    while read -r lib; do libs+=("$lib"); done < <(
        awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out"
    )
    ((${#libs[@]} > 0)) || die "cannot parse ldd output:"$'\n'"$ldd_out"
fi
libc_dir=""
for lib in "${libs[@]}"; do
    stage "$lib"
    [[ "$(basename "$lib")" == libc.so.* ]] && libc_dir="$(dirname "$lib")"
done
# Host names are resolved through NSS; glibc ≥ 2.34 has the files and dns modules built
# in, older ones dlopen them (ldd does not list them). Copy them when they exist.
if [[ -n "$libc_dir" ]]; then
    for mod in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
        [[ -e "$libc_dir/$mod" ]] && stage "$libc_dir/$mod"
    done
fi

cat >"$ROOT/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
ringtail:x:$RUN_UID:$RUN_UID:ringtail:/var/lib/ringtail:/sbin/nologin
PASSWD
cat >"$ROOT/etc/group" <<GROUP
root:x:0:
ringtail:x:$RUN_UID:
GROUP
echo "hosts: files dns" >"$ROOT/etc/nsswitch.conf"
# CA certificates, for an S3 store over https.
for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [[ -f "$ca" ]]; then
        mkdir -p "$ROOT/etc/ssl/certs"
        cp -L "$ca" "$ROOT/etc/ssl/certs/ca-certificates.crt"
        break
    fi
done

mkdir -p "$CTX/var-lib-ringtail/data" "$CTX/var-lib-ringtail/blocks"
cp "$REPO/Dockerfile.scratch" "$CTX/Dockerfile"

revision="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
version="$("$BIN" --version | awk '{ print $2 }')"
echo "build-image: $IMAGE from $BIN ($version, ${#libs[@]} shared libraries, context $(du -sh "$CTX" | cut -f1))" >&2
previous="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
# Docker's output only on failure (the legacy builder warns about itself on every build).
if ! out="$(docker build --quiet \
    --label "org.opencontainers.image.title=ringtail" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    -t "$IMAGE" "$CTX" 2>&1)"; then
    die "docker build failed:"$'\n'"$out"
fi

# The image this tag pointed to before, now untagged: remove it unless a container uses it.
if [[ -n "$previous" && "$previous" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
fi

# The image must run the binary: every library and the loader are in place.
docker run --rm --entrypoint ringtail "$IMAGE" --version >/dev/null \
    || die "the image $IMAGE cannot run ringtail; libraries missing?"
echo "build-image: built $IMAGE" >&2
