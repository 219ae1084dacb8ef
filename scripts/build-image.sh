#!/usr/bin/env bash
# Builds a connector's container image without a container engine.
#
#   scripts/build-image.sh [--connector NAME] [--smoke] [--tag NAME] [--archive FILE] [--stage-only]
#
# 1. Builds statically linked binaries of both connectors of the crate (source-postgres, the CDC
#    connector, and source-postgres-batch) with scripts/build-release.sh: glibc with crt-static,
#    for x86_64-unknown-linux-gnu.
# 2. Stages them and the system CA bundle under target/image/ (see Dockerfile, .dockerignore).
# 3. Builds the Dockerfile's stage of the chosen connector with buildah, using vfs storage and
#    chroot isolation, which work as root without a daemon, overlayfs or user namespaces. The image
#    stays in buildah's local storage under NAME (default localhost/<connector>:dev).
#
#   --connector C  source-postgres (the default) or source-postgres-batch: which image to build.
#   --smoke        then check the image as the Flow runtime would use it: export it to an OCI
#                  layout, read its config with skopeo (labels, entrypoint, platform), unpack it
#                  with umoci and run the entrypoint in a chroot of the root filesystem with a spec
#                  request, expecting exactly one line with the protocol version.
#   --archive FILE also write the image to FILE as an OCI archive (for `skopeo copy`, `docker load`
#                  needs docker-archive: use `buildah push NAME docker-archive:FILE` for that).
#   --stage-only   stop after step 2.
#
# Installs buildah, umoci and skopeo with apt-get when they are missing (needs root).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

smoke=false
stage_only=false
connector="source-postgres"
tag=""
archive=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --connector) connector="${2:?--connector needs a value}"; shift ;;
        --smoke) smoke=true ;;
        --stage-only) stage_only=true ;;
        --tag) tag="${2:?--tag needs a value}"; shift ;;
        --archive) archive="${2:?--archive needs a value}"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

die() {
    echo "build-image: error: $*" >&2
    exit 1
}
case "$connector" in
    source-postgres | source-postgres-batch) ;;
    *) die "--connector must be source-postgres or source-postgres-batch, not $connector" ;;
esac
tag="${tag:-localhost/$connector:dev}"
step() {
    echo "==> $*"
}

ca_bundle="/etc/ssl/certs/ca-certificates.crt"
stage="$root/target/image"

# --- 1. the static binaries -----------------------------------------------------------------
# Both, whichever image is built: the Dockerfile's stages all read the same staged context.
# scripts/build-release.sh builds them (once: scripts/test.sh has built and tested the same).
binaries=(source-postgres source-postgres-batch)
step "scripts/build-release.sh: ${binaries[*]}"
release_dir="$(scripts/build-release.sh)"

# --- 2. the build context -------------------------------------------------------------------
step "staging the binaries and the CA bundle in target/image/"
[[ -f "$ca_bundle" ]] || die "$ca_bundle is missing (install the ca-certificates package)"
rm -rf "$stage"
mkdir -p "$stage"
for name in "${binaries[@]}"; do
    install -m 0755 "$release_dir/$name" "$stage/$name"
done
install -m 0644 "$ca_bundle" "$stage/ca-certificates.crt"
ls -l "$stage"
if $stage_only; then
    exit 0
fi

# --- 3. the image ---------------------------------------------------------------------------
if ! command -v buildah >/dev/null || ! command -v umoci >/dev/null || ! command -v skopeo >/dev/null; then
    [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null ||
        die "buildah, umoci and skopeo are needed; install them (Debian: apt-get install buildah umoci skopeo)"
    step "installing buildah, umoci and skopeo with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends buildah umoci skopeo
fi
buildah=(buildah --storage-driver vfs)
step "$(buildah --version); $(umoci --version); $(skopeo --version)"

step "building $tag (Dockerfile target $connector)"
# Replace an image left by an earlier run, so its layers do not pile up in the vfs storage.
"${buildah[@]}" rmi --force "$tag" >/dev/null 2>&1 || true
# --timestamp 0: a fixed creation time, so the same binary always gives the same image digest.
"${buildah[@]}" bud --isolation chroot --platform linux/amd64 --timestamp 0 \
    --target "$connector" -f Dockerfile -t "$tag" .
"${buildah[@]}" images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$tag"

if [[ -n "$archive" ]]; then
    step "writing $archive"
    rm -f "$archive"
    "${buildah[@]}" push "$tag" "oci-archive:$archive:${tag##*:}"
fi

if ! $smoke; then
    exit 0
fi

# --- smoke test -----------------------------------------------------------------------------
work="$root/target/image-smoke"
rm -rf "$work"
mkdir -p "$work"
layout="$work/oci:smoke"

step "smoke: exporting to an OCI layout"
"${buildah[@]}" push "$tag" "oci:$layout"

step "smoke: checking the image config"
skopeo inspect --config "oci:$layout" >"$work/config.json"
python3 - "$work/config.json" "$connector" <<'PY'
import json, sys

image = json.load(open(sys.argv[1]))
connector = sys.argv[2]
config = image.get("config") or {}
labels = config.get("Labels") or {}
problems = []
expected = {
    "FLOW_RUNTIME_PROTOCOL": "capture",
    "FLOW_RUNTIME_CODEC": "json",
}
for key, value in expected.items():
    if labels.get(key) != value:
        problems.append(f"label {key} is {labels.get(key)!r}, expected {value!r}")
if config.get("Entrypoint") != [f"/connector/{connector}"]:
    problems.append(f"entrypoint is {config.get('Entrypoint')!r}")
if config.get("Cmd"):
    problems.append(f"there are default arguments (Cmd {config['Cmd']!r}); the runtime passes none")
if (image.get("os"), image.get("architecture")) != ("linux", "amd64"):
    problems.append(f"platform is {image.get('os')}/{image.get('architecture')}, expected linux/amd64")
if problems:
    sys.exit("image config: " + "; ".join(problems))
print(f"labels {expected}, entrypoint {config['Entrypoint']}, linux/amd64: ok")
PY

step "smoke: unpacking with umoci"
umoci unpack --rootless --image "$layout" "$work/bundle" >/dev/null
ls -lR "$work/bundle/rootfs"

step "smoke: running the entrypoint in a chroot of the image"
set +e
printf '{"spec":{}}\n' |
    timeout 60 chroot "$work/bundle/rootfs" "/connector/$connector" \
        >"$work/stdout" 2>"$work/stderr"
status=$?
set -e
if [[ $status -ne 0 ]]; then
    die "the connector exited with $status; stderr:"$'\n'"$(tail -n 20 "$work/stderr")"
fi
lines="$(wc -l <"$work/stdout")"
if [[ "$lines" -ne 1 ]] || ! grep -q '"protocol":3032023' "$work/stdout"; then
    die "expected one spec response line with \"protocol\":3032023, got $lines line(s):"$'\n'"$(head -c 2000 "$work/stdout")"
fi
echo "spec response: $(head -c 200 "$work/stdout")..."
rm -rf "$work"
step "smoke test passed: $tag"
