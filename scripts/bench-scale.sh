#!/usr/bin/env bash
# Kubelet scale: one `emulate --pods` process projecting the volumes of PODS pods, each with
# its own LIFETIME-second token (the kube-api-access volume: token, ca.crt, namespace), for
# DURATION seconds after every volume is first written. Prints start-up times, peak RSS
# (VmHWM), CPU seconds (utime+stime from /proc/PID/stat), CPU as % of one core, rotations done
# against the deadlines that fell due, and how late each rotation was against its schedule
# (p50/p99/max, exact, from the `late_ms` of every rotation's JSON log line).
# Targets (issue 6): under 100 MiB RSS, under 5 % of one core, p99 lateness under 100 ms, every
# rotation done.
#
# Env: PODS (10000), DURATION (300), LIFETIME (60), BIN (target/release/projected-token, built
# if missing), ARGS (more emulate flags, e.g. "--key-algorithm es256" or "--no-fsync"),
# VOLUMES (a directory, default the temporary one) to project into somewhere else, e.g. /dev/shm:
# the kubelet's projected volumes are tmpfs (memory-backed emptyDirs), where fsync costs nothing.
# PROBE=1 also asks the emulated API for GET /livez 20 times a second over one kept-alive
# connection (curl) while it runs, and prints that latency: does signing and writing delay the
# API server, which shares the process?
# KEEP=1 keeps the temporary directory (manifests, volumes, log) and prints where it is.
# Not run by CI: it takes DURATION seconds plus start-up.
set -euo pipefail
cd "$(dirname "$0")/.."
pods=${PODS:-10000}
duration=${DURATION:-300}
lifetime=${LIFETIME:-60}
bin=${BIN:-target/release/projected-token}
extra=${ARGS:-}
if [ ! -x "$bin" ]; then
  cargo build --release --bin projected-token
fi
hz=$(getconf CLK_TCK)
tmp=$(mktemp -d)
out=$(mktemp -d "${VOLUMES:-$tmp}/volumes.XXXXXX")
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $tmp ($out)"; else rm -rf "$out" "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kib() { awk -v f="$1" '$1 == f":" { print $2 }' "/proc/$pid/status"; }
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat"; }
# user and system ticks apart: the atomic writer's file system calls are system time.
user_ticks() { awk '{ sub(/^.*\) /, ""); print $12 }' "/proc/$pid/stat"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
fail() {
  echo "$1; the log's last lines:" >&2
  tail -n 20 "$tmp/log.json" >&2 || true
  exit 1
}

echo "binary: $bin ($(stat -c '%s bytes, built %y' "$bin" | cut -d. -f1)); $(nproc) cores"
echo "pods $pods, tokens of $lifetime s, $duration s after start-up; flags: ${extra:-none}; volumes on $(df --output=fstype "$out" | tail -n 1) ($out)"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- the pod manifests: one file per pod, ten namespaces, a service account per ten pods -------
mkdir "$tmp/pods"
awk -v n="$pods" -v dir="$tmp/pods" 'BEGIN {
  for (i = 0; i < n; i++) {
    file = sprintf("%s/pod-%05d.yaml", dir, i)
    printf "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app-%05d\n  namespace: team-%d\n  labels: {app: app-%d}\nspec:\n  serviceAccountName: sa-%d\n  nodeName: node-%d\n  containers: [{name: app, image: app}]\n  volumes:\n  - name: kube-api-access\n    projected:\n      defaultMode: 420\n      sources:\n      - serviceAccountToken: {path: token, expirationSeconds: 3607}\n      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}\n      - downwardAPI: {items: [{path: namespace, fieldRef: {apiVersion: v1, fieldPath: metadata.namespace}}]}\n", i, i % 10, i % 100, int(i / 10), i % 50 > file
    close(file)
  }
}'

# --- run -----------------------------------------------------------------------------------------
start_ms=$(now_ms)
# shellcheck disable=SC2086 # ARGS is a list of flags
PROJECTED_TOKEN_ADMIN_TOKEN_FILE="$tmp/admin-token" "$bin" --log-format json emulate \
  --dir "$out" --pods "$tmp/pods" --expiration-seconds "$lifetime" --listen 127.0.0.1:0 \
  --ca-out "$tmp/ca.crt" \
  $extra >"$tmp/stdout" 2>"$tmp/log.json" &
pid=$!
until grep -q '"initial projection done"' "$tmp/log.json" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || fail "emulate exited during start-up"
  [ $(($(now_ms) - start_ms)) -lt 600000 ] || fail "not started within 10 minutes"
  sleep 0.05
done
ready_ms=$(now_ms)
ready_ticks=$(ticks)
ready_user=$(user_ticks)
ready_hwm=$(kib VmHWM)
probe=
if [ "${PROBE:-0}" = 1 ]; then
  url=$(sed -n 's/^serving https API on //p' "$tmp/stdout" | head -n 1)
  # One curl, one connection, $duration*20 requests paced at 20/s.
  awk -v n=$((duration * 20)) -v url="$url/livez" \
    'BEGIN { for (i = 0; i < n; i++) { print "url = " url; print "output = /dev/null" } }' >"$tmp/probe.cfg"
  curl -s --cacert "$tmp/ca.crt" --rate 20/s -K "$tmp/probe.cfg" \
    -w '%{http_code} %{time_total}\n' >"$tmp/probe.txt" 2>/dev/null &
  probe=$!
fi
sleep "$duration"
kill -0 "$pid" 2>/dev/null || fail "emulate exited"
end_ticks=$(ticks)
end_user=$(user_ticks)
hwm=$(kib VmHWM)
rss=$(kib VmRSS)
anon=$(kib RssAnon)
threads=$(kib Threads)
stop_iso=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
echo "load at end:   $(cut -d' ' -f1-3 /proc/loadavg)"

# --- report --------------------------------------------------------------------------------------
field() { jq -r "select(.fields.message == \"$1\") | .fields.$2" "$tmp/log.json" | head -n 1; }
echo "start-up: planning $(field "planned the pods" elapsed_ms) ms, directories $(field "prepared the volume directories" elapsed_ms) ms, first tokens of every volume $(field "initial projection done" elapsed_ms) ms ($(field "initial projection done" written) volumes written); process start to ready $((ready_ms - start_ms)) ms"
awk -v hwm="$hwm" -v rss="$rss" -v anon="$anon" -v rhwm="$ready_hwm" -v t="$threads" 'BEGIN {
  printf "memory: peak RSS (VmHWM) %.1f MiB (%.1f MiB at ready); at the end VmRSS %.1f MiB, RssAnon %.1f MiB; %d threads\n",
    hwm / 1024, rhwm / 1024, rss / 1024, anon / 1024, t }'
awk -v a="$ready_ticks" -v b="$end_ticks" -v hz="$hz" -v d="$duration" 'BEGIN {
  printf "CPU: %.2f s at start-up, %.2f s over the %d s run = %.2f %% of one core (%.2f s in all)\n",
    a / hz, (b - a) / hz, d, (b - a) / hz / d * 100, b / hz }'
awk -v a="$ready_ticks" -v b="$end_ticks" -v ua="$ready_user" -v ub="$end_user" -v hz="$hz" 'BEGIN {
  printf "CPU over the run: user %.2f s, system %.2f s\n", (ub - ua) / hz, ((b - a) - (ub - ua)) / hz }'
# Deadlines that fell due at least a second before the stop must all have been served: one per
# written token's `next_refresh` (first writes and rotations alike), against rotations
# scheduled by then.
jq -r --arg stop "$stop_iso" '
  def ts: capture("^(?<s>[^.Z]+)(?<f>\\.[0-9]+)?Z$") | ((.s + "Z") | fromdateiso8601) + (("0" + (.f // ".0")) | tonumber);
  ($stop | ts) as $cutoff
  | select(.fields.message == "token rotated")
  | .fields
  | [ (if .late_ms == null then "first" else "rotation" end),
      (if (.next_refresh | ts) <= $cutoff - 1 then 1 else 0 end),
      (if .scheduled_at != null and (.scheduled_at | ts) <= $cutoff - 1 then 1 else 0 end),
      (.late_ms // 0) ] | @tsv' "$tmp/log.json" >"$tmp/rotations.tsv"
awk -F'\t' '
  $1 == "first" { first++ } $1 == "rotation" { rotations++ }
  { expected += $2; done += $3 }
  END { printf "rotations: %d done (%d first writes); %d of %d deadlines due by the stop (less 1 s) served%s\n",
    rotations, first, done, expected, (done >= expected ? ": every rotation done" : ": MISSED " expected - done) }' "$tmp/rotations.tsv"
awk -F'\t' '$1 == "rotation" { print $4 }' "$tmp/rotations.tsv" | sort -g >"$tmp/late"
awk '{ v[NR] = $1 } END {
  if (NR == 0) { print "lateness: no rotation"; exit }
  i50 = int(NR * 0.50 + 0.999999); i99 = int(NR * 0.99 + 0.999999)
  printf "lateness (ms): p50 %.3f, p99 %.3f, max %.3f over %d rotations\n", v[i50], v[i99], v[NR], NR }' "$tmp/late"
echo "log: $(wc -l <"$tmp/log.json") lines, $(($(stat -c %s "$tmp/log.json") / 1024)) KiB; warnings/errors: $(jq -r 'select(.level != "INFO") | .fields.message' "$tmp/log.json" | sort | uniq -c | tr '\n' ';')"
if [ -n "$probe" ]; then
  wait "$probe" 2>/dev/null || true
  awk '$1 == 200 { print $2 }' "$tmp/probe.txt" | sort -g | awk '{ v[NR] = $1 * 1000 } END {
    if (NR == 0) { print "API probe: no answer"; exit }
    printf "API GET /livez while rotating (ms): p50 %.3f, p99 %.3f, max %.3f over %d requests\n",
      v[int(NR * 0.5 + 0.999999)], v[int(NR * 0.99 + 0.999999)], v[NR], NR }'
fi
leftovers=$(find "$out" -name '..data_tmp' | wc -l)
echo "exit status after SIGTERM: $status; leftover ..data_tmp: $leftovers"
