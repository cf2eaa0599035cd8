#!/usr/bin/env bash
# Idle memory and CPU of `sidecar` against the emulator (`serve`) on loopback. Starts `serve`
# (ES256) on 127.0.0.1:0, writes a kubeconfig that uses its admin token and CA, then runs three
# sidecars side by side:
#   sidecar-1        one token from the flags (--service-account, --audience,
#                    --expiration-seconds 3600), with ca.crt and namespace
#   sidecar-100vol   --pod with 100 projected volumes, one serviceAccountToken each
#   sidecar-100src   --pod with one projected volume of 100 serviceAccountToken sources
# and, beside them, the emulator projecting its default pod (`emulate --dir`).
# It waits until every token is on disk, lets them settle, then prints
#   - what each process costs a pod: private memory (`Anonymous:` in /proc/PID/smaps_rollup: heap,
#     stacks, written data; nothing else can share or reclaim it), next to Pss and Rss (which also
#     count the binary's clean code pages, shared with every process running the same file and
#     reclaimable; here Pss splits them among the five processes of this run);
#   - for each sidecar: VmRSS/VmHWM, RssAnon/RssFile, Pss, thread count, and over an idle window
#     the CPU time (utime+stime from /proc/PID/stat in clock ticks, and the per-thread scheduler
#     run time from /proc/PID/task/*/schedstat in ns) and the context switches of all its
#     threads (anything that wakes up shows there). The tokens live an hour, so no refresh is
#     due during the window.
# Usage: scripts/measure-sidecar.sh [idle window seconds, default 30] [settle seconds, default 15]
# (the default settle outlasts tokio's 10 s keep-alive of its blocking-pool threads, which the
# startup's file writes spawned).
# Env: BIN (default target/release/projected-token, built if missing), e.g. the shipped static
# binary: scripts/build-static.sh; BIN=target/image/rootfs/usr/local/bin/projected-token.
# STRACE=DIR: also strace every sidecar over the idle window (syscalls of all threads, futex
# included) into DIR/<label>.strace.
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-30}
settle=${2:-15}
bin=${BIN:-target/release/projected-token}
if [ ! -x "$bin" ]; then
  cargo build --release --bin projected-token
fi
echo "binary: $bin ($(stat -c '%s bytes, built %y' "$bin" | cut -d. -f1))"
hz=$(getconf CLK_TCK)
tmp=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kib() { awk -v f="$1" '$1 == f":" { print $2 }' "$2"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# fail MESSAGE LOG: prints MESSAGE and the log, exits.
fail() {
  echo "$1; its log:" >&2
  cat "$2" >&2 || true
  exit 1
}

# --- the emulator -------------------------------------------------------------------------------
: >"$tmp/serve.out"
PROJECTED_TOKEN_LOG=warn "$bin" serve --listen 127.0.0.1:0 --key-algorithm es256 \
  --ca-out "$tmp/ca.crt" --admin-token-file "$tmp/admin-token" >"$tmp/serve.out" 2>"$tmp/serve.err" &
serve_pid=$!
pids+=("$serve_pid")
tries=0
until grep -q '^admin token file: ' "$tmp/serve.out"; do
  if ! kill -0 "$serve_pid" 2>/dev/null || [ $tries -ge 400 ]; then
    fail "serve: not ready after $((tries / 20)) s" "$tmp/serve.err"
  fi
  tries=$((tries + 1))
  sleep 0.05
done
url=$(sed -n 's/^serving https API on //p' "$tmp/serve.out" | head -n 1)
# The emulator proper: its default pod's token in $tmp/emulate (own state directory, so it
# shares no key or CA with `serve`).
PROJECTED_TOKEN_LOG=warn "$bin" emulate --dir "$tmp/emulate" --state-dir "$tmp/emulate-state" \
  --listen 127.0.0.1:0 >"$tmp/emulate.out" 2>"$tmp/emulate.err" &
emulate_pid=$!
pids+=("$emulate_pid")
cat >"$tmp/kubeconfig" <<EOF
apiVersion: v1
kind: Config
current-context: bench
contexts:
- name: bench
  context: {cluster: emulator, user: admin}
clusters:
- name: emulator
  cluster:
    server: $url
    certificate-authority: $tmp/ca.crt
users:
- name: admin
  user:
    tokenFile: $tmp/admin-token
EOF

# --- the pod manifests --------------------------------------------------------------------------
pod_header() {
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: bench, namespace: default, uid: 0b6c2d7e-5a1f-4c3b-9d8e-7f6a5b4c3d2e}\n'
  printf 'spec:\n  serviceAccountName: default\n  containers: [{name: app, image: app}]\n  volumes:\n'
}
{
  pod_header
  for i in $(seq 0 99); do
    printf '  - name: vol%d\n    projected:\n      sources:\n      - serviceAccountToken: {path: token, audience: aud%d, expirationSeconds: 3600}\n' "$i" "$i"
  done
} >"$tmp/pod-100vol.yaml"
{
  pod_header
  printf '  - name: tokens\n    projected:\n      sources:\n'
  for i in $(seq 0 99); do
    printf '      - serviceAccountToken: {path: token%d, audience: aud%d, expirationSeconds: 3600}\n' "$i" "$i"
  done
} >"$tmp/pod-100src.yaml"

# --- the sidecars -------------------------------------------------------------------------------
labels=(sidecar-1 sidecar-100vol sidecar-100src)
declare -A pid_of started_at expected
# start LABEL ARGS...: starts a sidecar into $tmp/LABEL.
start() {
  local label=$1
  shift
  started_at[$label]=$(now_ms)
  "$bin" sidecar --kubeconfig "$tmp/kubeconfig" --dir "$tmp/$label" "$@" \
    >"$tmp/$label.out" 2>"$tmp/$label.err" &
  pid_of[$label]=$!
  pids+=("$!")
}
start sidecar-1 --service-account default --audience bench --expiration-seconds 3600
expected[sidecar-1]=$tmp/sidecar-1/token
start sidecar-100vol --pod "$tmp/pod-100vol.yaml"
expected[sidecar-100vol]=$(for i in $(seq 0 99); do printf '%s ' "$tmp/sidecar-100vol/vol$i/token"; done)
start sidecar-100src --pod "$tmp/pod-100src.yaml"
expected[sidecar-100src]=$(for i in $(seq 0 99); do printf '%s ' "$tmp/sidecar-100src/tokens/token$i"; done)

# Every token on disk (a coarse figure: the three start together on shared cores; the criterion
# bench `sidecar` measures start to first token alone).
declare -A ready_ms
for tries in $(seq 0 1500); do
  waiting=0
  for label in "${labels[@]}"; do
    [ -n "${ready_ms[$label]:-}" ] && continue
    kill -0 "${pid_of[$label]}" 2>/dev/null || fail "$label exited" "$tmp/$label.err"
    all=1
    for file in ${expected[$label]}; do
      if [ ! -s "$file" ]; then all=0; break; fi
    done
    if [ $all = 1 ]; then
      ready_ms[$label]=$(($(now_ms) - started_at[$label]))
    else
      waiting=1
    fi
  done
  [ $waiting = 0 ] && break
  sleep 0.02
done
for label in "${labels[@]}"; do
  [ -n "${ready_ms[$label]:-}" ] || fail "$label: not every token on disk after 30 s" "$tmp/$label.err"
done
tries=0
until [ -s "$tmp/emulate/token" ]; do
  if ! kill -0 "$emulate_pid" 2>/dev/null || [ $tries -ge 600 ]; then
    fail "emulate: no token after $((tries / 20)) s" "$tmp/emulate.err"
  fi
  tries=$((tries + 1))
  sleep 0.05
done

sleep "$settle"

# snapshot PID FILE: utime+stime ticks, then per thread: tid, run ns, voluntary, nonvoluntary.
snapshot() {
  local pid=$1 task
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" >"$2"
  for task in /proc/"$pid"/task/*; do
    printf '%s %s %s %s %s\n' "${task##*/}" "$(awk '{ print $1 }' "$task/schedstat" 2>/dev/null || echo 0)" \
      "$(kib voluntary_ctxt_switches "$task/status")" "$(kib nonvoluntary_ctxt_switches "$task/status")" \
      "$(tr -d ' ' <"$task/comm")" >>"$2" 2>/dev/null || true
  done
}

tracers=()
for label in "${labels[@]}"; do
  snapshot "${pid_of[$label]}" "$tmp/$label.before"
  if [ -n "${STRACE:-}" ]; then
    mkdir -p "$STRACE"
    strace -f -tt -p "${pid_of[$label]}" -o "$STRACE/$label.strace" 2>/dev/null &
    tracers+=("$!")
    pids+=("$!")
  fi
done
sleep "$window"
for label in "${labels[@]}"; do snapshot "${pid_of[$label]}" "$tmp/$label.after"; done
for pid in "${tracers[@]}"; do kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done

echo "idle window ${window} s after a ${settle} s settle; load: $(cut -d' ' -f1-3 /proc/loadavg)"
# What a pod pays: private (anonymous) memory, then Pss and Rss (/proc/PID/smaps_rollup), KiB.
mib() { awk -v k="$1" 'BEGIN { printf "%.2f", k / 1024 }'; }
printf '%-16s %22s %22s %22s\n' process "private (Anonymous)" Pss Rss
for label in "${labels[@]}" emulator-serve emulator-emulate; do
  case $label in
    emulator-serve) pid=$serve_pid ;;
    emulator-emulate) pid=$emulate_pid ;;
    *) pid=${pid_of[$label]} ;;
  esac
  kill -0 "$pid" 2>/dev/null || fail "$label exited" "$tmp/${label#emulator-}.err"
  rollup=/proc/$pid/smaps_rollup
  anon=$(kib Anonymous "$rollup")
  pss=$(kib Pss "$rollup")
  rss=$(kib Rss "$rollup")
  printf '%-16s %9s KiB %5s MiB %9s KiB %5s MiB %9s KiB %5s MiB\n' "$label" \
    "$anon" "$(mib "$anon")" "$pss" "$(mib "$pss")" "$rss" "$(mib "$rss")"
done
for label in "${labels[@]}"; do
  pid=${pid_of[$label]}
  kill -0 "$pid" 2>/dev/null || fail "$label exited" "$tmp/$label.err"
  status=/proc/$pid/status
  rss=$(kib VmRSS "$status")
  hwm=$(kib VmHWM "$status")
  pss=$(kib Pss "/proc/$pid/smaps_rollup" 2>/dev/null || echo "?")
  # TCP connections kept open (the HTTP client's pool): its socket fds found in /proc/net/tcp*.
  sockets=$(find "/proc/$pid/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null | tr -dc '0-9\n' | sort -u)
  tcp=$(awk 'NR == FNR { inode[$1]; next } FNR > 1 && ($10 in inode) { n++ } END { print n + 0 }' \
    <(echo "$sockets") "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6")
  printf '%-15s VmRSS %6s KiB (%5.2f MiB)  VmHWM %6s KiB (%5.2f MiB)  RssAnon %6s KiB  RssFile %6s KiB  Pss %6s KiB  threads %s  TCP connections %s  all tokens on disk %s ms\n' \
    "$label" "$rss" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" \
    "$hwm" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')" \
    "$(kib RssAnon "$status")" "$(kib RssFile "$status")" "$pss" "$(kib Threads "$status")" \
    "$tcp" "${ready_ms[$label]}"
  # Threads that ended during the window are left out of the switch and run time sums (their
  # CPU time still counts in utime+stime).
  awk -v label="$label" -v hz="$hz" -v window="$window" '
    FNR == 1 { if (NR == 1) ticks0 = $1; else ticks1 = $1; next }
    NR == FNR { ns[$1] = $2; vol[$1] = $3; invol[$1] = $4; next }
    {
      dns = $2 - ns[$1]; dv = $3 - vol[$1]; di = $4 - invol[$1]
      run += dns; v += dv; n += di
      if (dv + di > 0) woke = woke sprintf(" %s:%d", $5, dv + di)
    }
    END {
      ms = (ticks1 - ticks0) * 1000 / hz
      printf "%-15s idle CPU %g ms in %d s (%g ms/min; %d ticks)  run time %.3f ms (%.3f ms/min)  ctxt switches voluntary +%d nonvoluntary +%d%s\n",
        label, ms, window, ms * 60 / window, ticks1 - ticks0, run / 1e6, run / 1e6 * 60 / window, v, n,
        (woke == "" ? "" : "  woken:" woke)
    }
  ' "$tmp/$label.before" "$tmp/$label.after"
done
