#!/usr/bin/env bash
# Runs the criterion benchmarks and prints one line per benchmark: its name and mean time.
# Usage: scripts/bench.sh [extra criterion args, e.g. --quick]
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench --bench atomic_write --bench signing --bench startup -- "$@" 2>&1 | tee "$out" >/dev/null
# criterion prints "<name>\n   time:   [low mean high]" (or on one line when the name is short)
awk '
  /time:/ {
    line=$0; sub(/^[ \t]+/, "", line)
    if (line ~ /^time:/) { name=prev } else { split(line, parts, /[ \t]+time:/); name=parts[1]; line="time:" parts[2] }
    match(line, /\[[^]]*\]/); range=substr(line, RSTART+1, RLENGTH-2); split(range, v, /[ \t]+/)
    printf "%-55s %s %s\n", name, v[3], v[4]
    next
  }
  { t=$0; sub(/^[ \t]+/, "", t); if (t != "" && t !~ /^(Benchmarking|Found|Warning|Gnuplot|change|No change|Performance|thrpt|[0-9]+ \()/) prev=t }
' "$out"
