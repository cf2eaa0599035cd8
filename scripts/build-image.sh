#!/usr/bin/env bash
# Builds the images with no registry: the static binaries on the host (scripts/build-static.sh,
# skipped with SKIP_STATIC_BUILD=1 when target/image/ is already there), then
#   projected-token:latest                   Dockerfile, target `local` (FROM scratch)
#   projected-token-example-client:latest    examples/docker-compose/client.Dockerfile
# and prints their sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SKIP_STATIC_BUILD:-}" != 1 ] || [ ! -x target/image/rootfs/usr/local/bin/projected-token ]; then
  scripts/build-static.sh
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
docker build --quiet --target local --build-arg "VERSION=$version" -t projected-token:latest .
docker build --quiet -f examples/docker-compose/client.Dockerfile -t projected-token-example-client:latest .
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^projected-token'
