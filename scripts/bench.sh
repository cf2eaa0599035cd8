#!/usr/bin/env bash
# Runs the criterion benchmarks and prints one line per benchmark: its name and mean time (and
# mean throughput when the benchmark declares one), then the API's rates as a share of the raw
# signing/verification rates measured in the same run, the CPU time per request of the server and
# the load generator (benches/api.rs), then the idle memory of the binary and the sidecar's idle
# memory, CPU time and wake-ups (scripts/measure-sidecar.sh); benches/sidecar.rs gives the
# sidecar's start to first token and --once times.
# Usage: scripts/bench.sh [extra criterion args, e.g. --quick]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "load before: $(uptime)"
if ! cargo bench --bench atomic_write --bench signing --bench startup --bench api --bench sidecar -- "$@" >"$out" 2>&1; then
  echo "cargo bench failed; its last lines:" >&2
  tail -n 30 "$out" >&2
  exit 1
fi
echo "load after:  $(uptime)"
# criterion prints "<name>\n   time:   [low mean high]" (or on one line when the name is short),
# followed by "thrpt:  [low mean high]" for benchmarks with a throughput.
awk '
  function flush() { if (pending != "") print pending; pending = ""; want_thrpt = 0 }
  function mean(line) { match(line, /\[[^]]*\]/); split(substr(line, RSTART+1, RLENGTH-2), v, /[ \t]+/) }
  function ns(value, unit) {
    if (unit == "ps") return value / 1000
    if (unit == "ns") return value
    if (unit == "µs" || unit == "us") return value * 1000
    if (unit == "ms") return value * 1000000
    return value * 1000000000
  }
  # the "change:" block repeats time/thrpt as percentages against the last run: not figures
  /(time|thrpt):/ && /\[[^]]*%/ { flush(); next }
  /time:/ {
    flush()
    line=$0; sub(/^[ \t]+/, "", line)
    if (line ~ /^time:/) { name=prev } else { split(line, parts, /[ \t]+time:/); name=parts[1]; line="time:" parts[2] }
    mean(line)
    pending = sprintf("%-55s %s %s", name, v[3], v[4])
    if (!(name in mean_ns)) order[count++] = name
    mean_ns[name] = ns(v[3], v[4])
    want_thrpt = 1
    next
  }
  /^cpu api\// { flush(); cpu[cpus++] = substr($0, 5); next }
  /^rss api\// { flush(); rss[rsss++] = substr($0, 5); next }
  /thrpt:/ && want_thrpt { mean($0); pending = pending sprintf("  (%s %s)", v[3], v[4]); flush(); next }
  { flush(); t=$0; sub(/^[ \t]+/, "", t); if (t != "" && t !~ /^(Benchmarking|Found|Warning|Gnuplot|change|No change|Performance|thrpt|[0-9]+ \()/) prev=t }
  END {
    flush()
    header = 0
    for (i = 0; i < count; i++) {
      name = order[i]
      if (name !~ /^api\/token_(request|review)_/) continue
      alg = name; sub(/^api\/token_(request|review)_/, "", alg); sub(/_.*/, "", alg)
      raw = (name ~ /request/ ? "api/raw_sign_" : "api/raw_verify_") alg
      if (!(raw in mean_ns) || mean_ns[name] == 0) continue
      if (!header) { print ""; print "API rate as a share of the raw crypto rate (same run):"; header = 1 }
      printf "%-55s %5.1f %% of %s\n", name, 100 * mean_ns[raw] / mean_ns[name], raw
    }
    if (cpus) { print ""; print "CPU time per request (server | load generator, same machine):" }
    for (i = 0; i < cpus; i++) { split(cpu[i], c, /: /); printf "%-55s %s\n", c[1], c[2] }
    if (rsss) { print ""; print "Memory of serve after the API benchmarks:" }
    for (i = 0; i < rsss; i++) { split(rss[i], c, /: /); printf "%-55s %s\n", c[1], c[2] }
  }
' "$out"
echo
echo "Idle memory (release binary, as built by cargo bench):"
scripts/measure-rss.sh
# The shipped binary (profile dist: opt-level z, fat LTO, stripped) has 45 % less code to map.
if [ -x target/dist/projected-token ]; then
  echo
  echo "Idle memory (dist binary, as last built by cargo build --profile dist):"
  BIN=target/dist/projected-token scripts/measure-rss.sh
fi
echo
echo "Sidecar idle memory and CPU (release binary):"
scripts/measure-sidecar.sh
if [ -x target/dist/projected-token ]; then
  echo
  echo "Sidecar idle memory and CPU (dist binary):"
  BIN=target/dist/projected-token scripts/measure-sidecar.sh
fi
