#!/usr/bin/env bash
# Builds the statically linked binaries (glibc with +crt-static, no musl needed; DNS through
# glibc's getaddrinfo reads /etc/hosts and /etc/resolv.conf, which Docker provides) and lays out
# target/image/ for the Dockerfile's `local` target:
#   target/image/rootfs/usr/local/bin/projected-token   the shipped binary (profile dist)
#   target/image/rootfs/tmp                             mode 1777
#   target/image/projected                              becomes /projected, owned by uid 65532
#   target/image/client/usr/local/bin/token-client      examples/token_client.rs, static, for the
#                                                       docker-compose example's app
# A plain cargo build: the profile (Cargo.toml's [profile.dist]: fat LTO, one codegen unit,
# panic=abort, stripped) decides everything; no linker wrapper, no extra tools.
# Env: PROFILE (default dist; `release` builds faster, a larger binary).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-dist}
target=x86_64-unknown-linux-gnu
# The explicit --target keeps build scripts and proc-macros dynamic; only our binaries are static.
# Two invocations: an example also links the dev-dependencies, whose features would otherwise be
# unified into the shipped binary (+0.5 MB).
export RUSTFLAGS='-C target-feature=+crt-static'
cargo build --locked --profile "$profile" --target "$target" --bin projected-token
cargo build --locked --profile "$profile" --target "$target" --example token_client
out=target/$target/$profile

rm -rf target/image
mkdir -p target/image/rootfs/usr/local/bin target/image/rootfs/tmp target/image/projected \
  target/image/client/usr/local/bin target/image/client/tmp
chmod 1777 target/image/rootfs/tmp target/image/client/tmp
shipped=target/image/rootfs/usr/local/bin/projected-token
cp "$out/projected-token" "$shipped"
"$shipped" --version >/dev/null
cp "$out/examples/token_client" target/image/client/usr/local/bin/token-client
strip target/image/client/usr/local/bin/token-client 2>/dev/null || true
ls -l "$shipped" target/image/client/usr/local/bin/token-client
