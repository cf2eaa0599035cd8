#!/usr/bin/env bash
# Does a client pick up rotated tokens? Runs `projected-token emulate` with short-lived tokens,
# runs the client against it for a while, then gates on `projected-token check`.
#
# Usage: examples/reload-test.sh 'CLIENT COMMAND'
#   The command runs under `sh -c` with KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and
#   SERVICEACCOUNT_DIR (token, ca.crt, namespace; kept fresh by the emulator) exported, e.g.
#   examples/reload-test.sh 'target/debug/examples/token_client --credentials-dir "$SERVICEACCOUNT_DIR"'
# Env: PROJECTED_TOKEN_BIN  the binary (default: projected-token on PATH, else target/release's)
#      LIFETIME             token lifetime in seconds (default 3: a rotation every ~2.4 s)
#      DURATION             how long the client runs, in seconds (default 30)
#      MAX_RELOAD_DELAY     check's bound on using a replaced token (default 1s; 5 means 5s)
#      REPORT               also write check's reload report to $REPORT.json and $REPORT.html
# Exit status: 0 pass; 1 a client broke the bounds, no client reached the emulator, or the client
# command failed (an exit status other than 0 or the timeout's 124); 2 if the setup failed.
set -euo pipefail

if [ $# -ne 1 ]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
client=$1
bin=${PROJECTED_TOKEN_BIN:-$(command -v projected-token || echo target/release/projected-token)}
lifetime=${LIFETIME:-3}
duration=${DURATION:-30}
max_reload_delay=${MAX_RELOAD_DELAY:-1s}

tmp=$(mktemp -d)
emulator=
cleanup() {
  if [ -n "$emulator" ]; then
    kill "$emulator" 2>/dev/null || true
    wait "$emulator" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" emulate --dir "$tmp/serviceaccount" --expiration-seconds "$lifetime" \
  --listen 127.0.0.1:0 --admin-token-file "$tmp/admin-token" >"$tmp/emulate.out" 2>"$tmp/emulate.log" &
emulator=$!
for _ in $(seq 100); do
  grep -q '^serving https API on ' "$tmp/emulate.out" && break
  kill -0 "$emulator" 2>/dev/null || break
  sleep 0.1
done
url=$(sed -n 's/^serving https API on //p' "$tmp/emulate.out" | head -n 1)
if [ -z "$url" ]; then
  echo "reload-test: the emulator did not start; its log:" >&2
  cat "$tmp/emulate.log" >&2
  exit 2
fi
hostport=${url#https://}
export KUBERNETES_SERVICE_HOST=${hostport%:*} KUBERNETES_SERVICE_PORT=${hostport##*:}
export SERVICEACCOUNT_DIR=$tmp/serviceaccount
echo "reload-test: emulator on $url, ${lifetime} s tokens; running the client for ${duration} s"

status=0
timeout --signal=TERM "${duration}s" sh -c "$client" || status=$?
# 124: stopped by the timeout, as planned. Anything else non-zero: the client failed, and the
# test fails whatever check says (check still runs: its report tells what the client did).
client_failed=
if [ "$status" -ne 0 ] && [ "$status" -ne 124 ]; then
  client_failed=1
  echo "reload-test: the client exited with status $status" >&2
fi

report=()
if [ -n "${REPORT:-}" ]; then report=(--report "$REPORT"); fi
check_status=0
"$bin" check --server "$url" --ca "$SERVICEACCOUNT_DIR/ca.crt" --token-file "$tmp/admin-token" \
  --max-reload-delay "$max_reload_delay" "${report[@]}" || check_status=$?
if [ -n "$client_failed" ]; then
  echo "reload-test: FAIL: the client command failed (exit status $status)" >&2
  exit 1
fi
exit "$check_status"
