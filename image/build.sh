#!/usr/bin/env bash
# `make image`: builds the Dockerfile on this machine and tags it
# $IMAGE_TAG (localhost/illustrator:test), the reference it prints last.
#
# The engine is Docker where a Docker daemon answers, else Podman (with
# Buildah and runc, installed with apt-get when missing; its settings are
# image/containers.conf). CONTAINER_ENGINE=docker|podman chooses.
# The base is $BASE when set (for example debian:bookworm-slim from a
# registry, or the CUDA base), else a Debian bookworm made here with
# debootstrap from Debian's packages and imported once as $BASE_TAG: no
# registry needed. $IMAGE_PYTHON names the distribution's Python package
# (python3.11 on Debian 12, the default on the Debian base made here; the
# Dockerfile's own default otherwise). With Podman, pip in the build uses
# this machine's pip sources, mounted for the build only (image/pip_sources.py).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${IMAGE_TAG:-localhost/illustrator:test}
BASE=${BASE:-}
BASE_TAG=${BASE_TAG:-localhost/illustrator-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=build/image
PYTHON=${PYTHON:-python3}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/image/containers.conf}

started=$(date +%s)
step() { echo "image [$(($(date +%s) - started))s] $*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_install PACKAGE...: install what is missing (Debian and Ubuntu).
apt_install() {
  local missing=() package
  for package in "$@"; do
    command -v "$package" > /dev/null || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]} with apt-get"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
  fi
}

if [ -z "${CONTAINER_ENGINE:-}" ]; then
  if command -v docker > /dev/null && docker info > /dev/null 2>&1; then
    CONTAINER_ENGINE=docker
  else
    CONTAINER_ENGINE=podman
  fi
fi
ENGINE=$CONTAINER_ENGINE
step "1/4 tools: $ENGINE"
if [ "$ENGINE" = podman ]; then apt_install podman buildah runc; fi
if [ -z "$BASE" ]; then apt_install debootstrap; fi

image_exists() { "$ENGINE" image inspect "$1" > /dev/null 2>&1; }
if [ -z "$BASE" ]; then
  BASE=$BASE_TAG
  IMAGE_PYTHON=${IMAGE_PYTHON:-python3.11}
  if image_exists "$BASE"; then
    step "2/4 base: $BASE (built before)"
  else
    step "2/4 base: Debian bookworm with debootstrap from $DEBIAN_MIRROR, once"
    root=$(mktemp -d)
    trap 'as_root rm -rf "$root"' EXIT
    as_root debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" > "$root.log" 2>&1 ||
      { tail -20 "$root.log"; exit 1; }
    rm -f "$root.log"
    # Security and point-release updates, as a distribution image has them.
    as_root tee "$root/etc/apt/sources.list" > /dev/null << EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main
EOF
    as_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    as_root tar -C "$root" -c . | "$ENGINE" import - "$BASE" > /dev/null
    step "2/4 base: imported as $BASE"
  fi
else
  step "2/4 base: $BASE"
fi

step "3/4 build: $TAG"
options=(--build-arg "BASE=$BASE" --tag "$TAG")
if [ -n "${IMAGE_PYTHON:-}" ]; then options+=(--build-arg "PYTHON=$IMAGE_PYTHON"); fi
if [ "$ENGINE" = podman ]; then
  # Docker's format keeps the HEALTHCHECK (OCI has no field for it).
  mapfile -t sources < <("$PYTHON" image/pip_sources.py "$WORK/pip")
  options+=(--format docker --network host --layers "${sources[@]}")
fi
"$ENGINE" build "${options[@]}" .

size=$("$ENGINE" image inspect --format '{{.Size}}' "$TAG")
base_size=$("$ENGINE" image inspect --format '{{.Size}}' "$BASE")
step "4/4 size: $((size / 1000000)) MB, of which the base $((base_size / 1000000)) MB"
echo "$TAG"
