#!/usr/bin/env bash
# Builds the statically linked binaries (glibc with +crt-static, no musl needed; DNS through
# glibc's getaddrinfo reads /etc/hosts and /etc/resolv.conf, which Docker provides) and lays out
# target/image/ for the Dockerfile's `local` target:
#   target/image/rootfs/usr/local/bin/projected-token   the shipped binary (profile dist)
#   target/image/rootfs/tmp                             mode 1777
#   target/image/projected                              becomes /projected, owned by uid 65532
#   target/image/client/usr/local/bin/token-client      examples/token_client.rs, static, for the
#                                                       docker-compose example's app
# The shipped binary is linked again from the objects of cargo's link (fat LTO runs once):
#   1. cargo links it through scripts/link-save.sh, which saves the link's inputs in
#      target/x86_64-unknown-linux-gnu/<profile>/link/projected_token/;
#   2. that link is repeated unstripped (projected-token.syms there) and
#      scripts/profile-functions.sh runs it under valgrind and writes the functions the sidecar,
#      serve and emulate execute (order.txt there; about 3 minutes, nearly all of it waiting, so
#      it runs while the example builds; reused while the link stays the same);
#   3. the shipped binary is that link with those functions first (--symbol-ordering-file) and
#      packed relative relocations (-z pack-relative-relocs), each link well under a second.
#      Idle RSS of a sidecar: 9.0 MiB without, under 4 MiB with (README, Benchmarks).
# Env: PROFILE (default dist; `release` builds faster, a larger binary). ORDER=0 skips the
# profiling (no valgrind needed; the binary keeps the compiler's function order).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-dist}
target=x86_64-unknown-linux-gnu
if [ "${ORDER:-1}" != 0 ] && ! command -v valgrind >/dev/null; then
  echo "build-static.sh: WARNING: the function order needs valgrind (apt-get install valgrind); building without it" >&2
  ORDER=0
fi
# The explicit --target keeps build scripts and proc-macros dynamic; only our binaries are static.
# Two invocations: an example also links the dev-dependencies, whose features would otherwise be
# unified into the shipped binary (+0.5 MB).
export RUSTFLAGS='-C target-feature=+crt-static'
build() {
  cargo rustc --locked --profile "$profile" --target "$target" --bin projected-token -- \
    -C linker="$PWD/scripts/link-save.sh"
}
build
out=target/$target/$profile
link=$out/link/projected_token
if [ ! -f "$link/stamp" ] || [ "$(sha256sum <"$out/projected-token" | cut -d' ' -f1)" != "$(cat "$link/stamp")" ]; then
  # cargo found the binary up to date, but its saved link is gone or older: link it again.
  echo "build-static.sh: no saved link of $out/projected-token; linking again"
  touch src/main.rs
  build
fi
# relink OUTPUT STRIP ARGS...: the saved link again, to OUTPUT, stripped or not, plus ARGS.
relink() {
  local output=$1 strip=$2 args=() arg previous=
  shift 2
  while IFS= read -r arg; do
    if [ "$previous" = -o ]; then
      arg=$output
    elif [ "$arg" = -Wl,--strip-all ] && [ "$strip" = 0 ]; then
      continue
    fi
    args+=("$arg")
    previous=$arg
  done <"$link/args"
  cc "${args[@]}" -Wl,-z,pack-relative-relocs "$@"
}
# The profile (mostly waiting for the sidecar's idle connection to close) runs while the example
# builds; an order made for the same link is reused.
profiling=
trap '[ -z "$profiling" ] || kill "$profiling" 2>/dev/null || true' EXIT
if [ "${ORDER:-1}" != 0 ] && ! cmp -s "$link/stamp" "$link/order.stamp"; then
  rm -f "$link/order.stamp"
  relink "$link/projected-token.syms" 0
  scripts/profile-functions.sh "$link/projected-token.syms" "$link/order.txt" &
  profiling=$!
fi
cargo build --locked --profile "$profile" --target "$target" --example token_client
ordered=0
if [ -n "$profiling" ]; then
  # A failed profile costs memory, not correctness: the binary is linked in the compiler's order.
  if wait "$profiling"; then
    cp "$link/stamp" "$link/order.stamp"
  else
    echo "build-static.sh: WARNING: profiling failed (see above); the shipped binary keeps the compiler's function order (idle RSS about 9 MiB instead of under 4)" >&2
    rm -f "$link/order.txt"
  fi
  profiling=
fi
[ "${ORDER:-1}" != 0 ] && [ -s "$link/order.txt" ] && cmp -s "$link/stamp" "$link/order.stamp" && ordered=1

rm -rf target/image
mkdir -p target/image/rootfs/usr/local/bin target/image/rootfs/tmp target/image/projected \
  target/image/client/usr/local/bin target/image/client/tmp
chmod 1777 target/image/rootfs/tmp target/image/client/tmp
shipped=target/image/rootfs/usr/local/bin/projected-token
if [ "$ordered" = 1 ]; then
  relink "$shipped" 1 -Wl,--symbol-ordering-file="$PWD/$link/order.txt" -Wl,--no-warn-symbol-ordering
  echo "build-static.sh: function order applied ($(wc -l <"$link/order.txt") functions first)"
else
  relink "$shipped" 1
  echo "build-static.sh: no function order (ORDER=0 or no profile)"
fi
"$shipped" --version >/dev/null
cp "$out/examples/token_client" target/image/client/usr/local/bin/token-client
strip target/image/client/usr/local/bin/token-client 2>/dev/null || true
ls -l target/image/rootfs/usr/local/bin/projected-token target/image/client/usr/local/bin/token-client
