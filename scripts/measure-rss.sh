#!/usr/bin/env bash
# Idle memory of the release binary: starts `serve` (generated RS256 key, then ES256) and, for
# comparison, `emulate --dir TMP`; waits until each prints its URL, lets it settle, prints
# VmRSS/VmHWM (and the anonymous/file split, PSS and thread count) and stops it.
# Usage: scripts/measure-rss.sh [settle seconds, default 2]
# Env: BIN (default target/release/projected-token, built if missing); anything else, e.g.
# MALLOC_ARENA_MAX, reaches the measured process.
set -euo pipefail
cd "$(dirname "$0")/.."
settle=${1:-2}
bin=${BIN:-target/release/projected-token}
if [ ! -x "$bin" ]; then
  cargo build --release --bin projected-token
fi
echo "binary: $bin ($(stat -c '%s bytes, built %y' "$bin" | cut -d. -f1))"
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

mib() { awk -v k="$1" 'BEGIN { print k / 1024 }'; }
kib() { awk -v f="$1" '$1 == f":" { print $2 }' "$2"; }

# measure LABEL ARGS...: runs "$bin" ARGS, prints one line of figures for LABEL.
measure() {
  local label=$1
  shift
  local out=$tmp/$label.out err=$tmp/$label.err
  : >"$out"
  PROJECTED_TOKEN_LOG=warn PROJECTED_TOKEN_LISTEN=127.0.0.1:0 "$bin" "$@" >"$out" 2>"$err" &
  pid=$!
  local tries=0
  until grep -q '^serving https API on ' "$out"; do
    if ! kill -0 "$pid" 2>/dev/null || [ $tries -ge 400 ]; then
      echo "$label: not ready after $((tries / 20)) s; stderr:" >&2
      cat "$err" >&2
      exit 1
    fi
    tries=$((tries + 1))
    sleep 0.05
  done
  sleep "$settle"
  local status=/proc/$pid/status
  local rss hwm anon file threads pss
  rss=$(kib VmRSS "$status")
  hwm=$(kib VmHWM "$status")
  anon=$(kib RssAnon "$status")
  file=$(kib RssFile "$status")
  threads=$(kib Threads "$status")
  pss=$(kib Pss "/proc/$pid/smaps_rollup" 2>/dev/null || echo "?")
  printf '%-14s VmRSS %6s KiB (%5.2f MiB)  VmHWM %6s KiB (%5.2f MiB)  RssAnon %6s KiB  RssFile %6s KiB  Pss %6s KiB  threads %s\n' \
    "$label" "$rss" "$(mib "$rss")" "$hwm" "$(mib "$hwm")" \
    "$anon" "$file" "$pss" "$threads"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

measure serve-rs256 serve --ca-out "$tmp/ca-rs.crt" --admin-token-file "$tmp/admin-rs"
measure serve-es256 serve --key-algorithm es256 --ca-out "$tmp/ca-es.crt" --admin-token-file "$tmp/admin-es"
measure emulate emulate --dir "$tmp/sa"
