#!/usr/bin/env bash
# Builds berth's container image (Dockerfile) from a berth binary built on this
# machine, without pulling any base image: the binary and what it links go into
# target/image/ (scripts/image-rootfs.sh), and the Dockerfile's final stage
# takes them from there.
#
#   scripts/build-image.sh                      cargo build --release, tag berth:latest
#   scripts/build-image.sh --binary PATH --tag NAME
#
# DOCKER names the docker client (default: docker); DOCKER_HOST is honoured.
# Needs a docker with BuildKit (DOCKER_BUILDKIT=1 is set here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

binary=""
tag="berth:latest"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--tag NAME]" >&2; exit 2 ;;
  esac
done

if [ -z "$binary" ]; then
  cargo build --release --locked --bin berth
  binary="${CARGO_TARGET_DIR:-target}/release/berth"
fi
scripts/image-rootfs.sh "$binary" target/image
DOCKER_BUILDKIT=1 "${DOCKER:-docker}" build --build-arg ROOTFS=prebuilt -t "$tag" -f Dockerfile .
