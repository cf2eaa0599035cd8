#!/usr/bin/env bash
# Writes the function order of the shipped binary: the functions that the sidecar, `serve` and
# `emulate` execute, in that order, one symbol a line (for lld's --symbol-ordering-file).
#
# Why: the kernel maps a binary's code in 64 KiB fault-around blocks, so the ~1.8 MB of code a
# sidecar runs (start-up, TLS, HTTP/2, JSON, JWT, the writer), scattered over 9.1 MiB of text,
# kept 6.8 MiB of it resident. Linked first and together, it keeps about 2.1 MiB.
#
# How: BIN (an unstripped link of the same objects, as scripts/build-static.sh makes it) runs
# short scenarios on loopback under valgrind's callgrind, which names every function executed:
#   1. sidecar, kubeconfig with tokenFile, against `serve` (ES256): one token, a SIGHUP refresh,
#      then idle until the HTTP pool closes its idle connection (90 s) and tokio's blocking
#      threads exit (as scripts/measure-sidecar.sh's sidecar-1, and what every sidecar runs
#      once idle; the close comes some 180 s after the refresh); runs alongside 2-4, so the
#      whole takes about 3 minutes
#   2. sidecar in-cluster (KUBERNETES_SERVICE_HOST/_PORT, --credentials-dir), bound to a pod,
#      with /metrics, /readyz and /healthz scraped and a signal hook
#   3. sidecar --pod with 25 tokens (more than the 8 requests it keeps in flight): 13 volumes of
#      one (and a downwardAPI source), one volume of 12
#   4. sidecar against `serve` with RS256 tokens and an RSA CA (real clusters' TLS chains)
# with `serve` under callgrind too, then `emulate` on its own. 2-4 end with SIGTERM.
# Usage: scripts/profile-functions.sh BIN OUT   (needs valgrind, openssl, python3)
# Env: POOL_WAIT=0 skips the wait for the pool's close in 1 (a quick order for experiments);
# KEEP=DIR keeps the profiles and logs in DIR.
set -euo pipefail
bin=$1
out=$2
for tool in valgrind openssl python3; do
  command -v "$tool" >/dev/null || {
    echo "profile-functions.sh: $tool is needed (Debian: apt-get install $tool)" >&2
    exit 1
  }
done
tmp=$(mktemp -d)
: >"$tmp/pids"
cleanup() {
  local pid
  for pid in $(cat "$tmp/pids"); do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then rm -rf "$KEEP"; cp -a "$tmp" "$KEEP"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "profile-functions.sh: $1; logs:" >&2
  tail -n 20 "$tmp"/*.err >&2 || true
  exit 1
}
# wait_for WHAT SECONDS COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
  local what=$1 tries=$(($2 * 10))
  shift 2
  until "$@"; do
    tries=$((tries - 1))
    [ $tries -gt 0 ] || fail "no $what"
    sleep 0.1
  done
}
says() { [ -s "$1" ] && grep -q "$2" "$1"; }
# callgrind LABEL ARGS...: runs the binary under callgrind in the background; sets $last_pid.
callgrind() {
  local label=$1
  shift
  PROJECTED_TOKEN_LOG=${LOG:-info} valgrind --tool=callgrind --demangle=no --dump-instr=no \
    --callgrind-out-file="$tmp/$label.cg" "$bin" "$@" >"$tmp/$label.out" 2>"$tmp/$label.err" &
  last_pid=$!
  echo "$last_pid" >>"$tmp/pids"
}
# finish PID: SIGTERM, and wait for callgrind to write its profile.
finish() {
  kill -TERM "$1"
  wait "$1" || fail "a profiled process failed"
}
# http_get HOST:PORT PATH: a plain HTTP/1.1 GET with bash's /dev/tcp; prints the response.
http_get() {
  local host=${1%:*} port=${1##*:}
  exec 3<>"/dev/tcp/$host/$port"
  printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
  cat <&3
  exec 3<&-
}
# tcp_connections PID: its established TCP connections (socket fds found in /proc/net/tcp*).
tcp_connections() {
  local sockets
  sockets=$(find "/proc/$1/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null | tr -dc '0-9\n' | sort -u)
  awk 'NR == FNR { inode[$1]; next } FNR > 1 && $4 == "01" && ($10 in inode) { n++ } END { print n + 0 }' \
    <(echo "$sockets") "/proc/$1/net/tcp" "/proc/$1/net/tcp6"
}
no_connection() { [ "$(tcp_connections "$1")" = 0 ]; }
# serve LABEL ARGS...: `serve` under callgrind; sets $url and $serve_pid.
serve() {
  local label=$1
  shift
  callgrind "$label" serve --listen 127.0.0.1:0 --admin-token-file "$tmp/$label.token" "$@"
  serve_pid=$last_pid
  wait_for "$label URL" 60 says "$tmp/$label.out" '^serving https API on '
  url=$(sed -n 's/^serving https API on //p' "$tmp/$label.out" | head -n 1)
}
kubeconfig() { # URL CA TOKENFILE
  printf 'apiVersion: v1\nkind: Config\ncurrent-context: p\ncontexts:\n- name: p\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: "%s", certificate-authority: "%s"}\nusers:\n- name: u\n  user: {tokenFile: "%s"}\n' "$@"
}
rotated() { [ -L "$1/..data" ] && [ "$(readlink "$1/..data")" != "$2" ]; }
# sidecar LABEL VOLUME ARGS...: profiles a sidecar: its first token in the volume directory
# VOLUME, SIGHUP, a second; with IDLE=1, waits until its connection pool is empty; SIGTERM.
sidecar() {
  local label=$1 dir=$2
  shift 2
  callgrind "$label" sidecar "$@"
  local pid=$last_pid
  wait_for "$label token" 60 test -L "$dir/..data"
  local first
  first=$(readlink "$dir/..data")
  if grep -q '^serving health and metrics on ' "$tmp/$label.out"; then
    local at
    at=$(sed -n 's|^serving health and metrics on http://||p' "$tmp/$label.out")
    for path in /metrics /readyz /healthz; do http_get "$at" "$path" >/dev/null; done
  fi
  kill -HUP "$pid"
  wait_for "$label refresh" 60 rotated "$dir" "$first"
  if [ "${IDLE:-}" = 1 ]; then
    # reqwest's pool closes a connection idle for 90 s (h2 GOAWAY, TLS close_notify), checked
    # every 90 s from when the pool first held an idle one (the first token, a second before
    # the refresh): so some 180 s after the refresh. Seen here: closed 134-191 s after it.
    wait_for "$label idle connection close" 240 no_connection "$pid"
  fi
  sleep 0.5
  finish "$pid"
}

# A process that receives the signal hook's USR1 (ignored, so it lives on).
(
  trap '' USR1
  exec sleep 600
) &
hook_pid=$!
echo "$hook_pid" >>"$tmp/pids"

# --- 1-3 against serve (ES256) ------------------------------------------------------------------
serve serve-es256 --key-algorithm es256 --ca-out "$tmp/ca.crt"
es256_pid=$serve_pid
kubeconfig "$url" "$tmp/ca.crt" "$tmp/serve-es256.token" >"$tmp/kubeconfig"
IDLE=$([ "${POOL_WAIT:-1}" = 0 ] || echo 1) \
  sidecar sidecar-kubeconfig "$tmp/v1" --dir "$tmp/v1" --kubeconfig "$tmp/kubeconfig" \
  --service-account default --audience bench --expiration-seconds 3600 &
idle_pid=$!
mkdir -p "$tmp/credentials"
cp "$tmp/serve-es256.token" "$tmp/credentials/token"
cp "$tmp/ca.crt" "$tmp/credentials/ca.crt"
printf default >"$tmp/credentials/namespace"
port=${url##*:}
KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=${port%/} \
  sidecar sidecar-in-cluster "$tmp/v2" --dir "$tmp/v2" --credentials-dir "$tmp/credentials" \
  --service-account vault --audience vault --expiration-seconds 600 \
  --bound-pod-name app-0 --bound-pod-uid 0b6c2d7e-5a1f-4c3b-9d8e-7f6a5b4c3d2e \
  --metrics-listen 127.0.0.1:0 --on-rotate-signal USR1 --signal-pid "$hook_pid"
{
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: app-1, namespace: default, uid: 1c7d3e8f-6b2a-4d4c-8e9f-8a7b6c5d4e3f, labels: {app: web}}\n'
  printf 'spec:\n  serviceAccountName: default\n  containers: [{name: app, image: app}]\n  volumes:\n'
  printf '  - name: vault\n    projected:\n      defaultMode: 0644\n      sources:\n'
  printf '      - serviceAccountToken: {path: token, audience: vault, expirationSeconds: 3600}\n'
  printf '      - downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}\n'
  for i in $(seq 12); do
    printf '  - name: v%d\n    projected:\n      sources:\n      - serviceAccountToken: {path: token, audience: a%d}\n' "$i" "$i"
  done
  printf '  - name: many\n    projected:\n      sources:\n'
  for i in $(seq 12); do
    printf '      - serviceAccountToken: {path: token%d, audience: m%d, expirationSeconds: 3607}\n' "$i" "$i"
  done
} >"$tmp/pod.yaml"
sidecar sidecar-pod "$tmp/v3/many" --dir "$tmp/v3" --kubeconfig "$tmp/kubeconfig" --pod "$tmp/pod.yaml"
test -s "$tmp/v3/vault/token" && test -s "$tmp/v3/v12/token" || fail "sidecar-pod: not every volume"

# --- 4 against serve (RS256, RSA CA) ------------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/rsa-ca.key" -out "$tmp/rsa-ca.crt" \
  -days 2 -subj /CN=profile-ca -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
serve serve-rs256 --key-algorithm rs256 --ca-cert "$tmp/rsa-ca.crt" --ca-key "$tmp/rsa-ca.key"
kubeconfig "$url" "$tmp/rsa-ca.crt" "$tmp/serve-rs256.token" >"$tmp/kubeconfig-rsa"
sidecar sidecar-rsa "$tmp/v4" --dir "$tmp/v4" --kubeconfig "$tmp/kubeconfig-rsa" --audience bench
finish "$serve_pid"

# --- emulate ------------------------------------------------------------------------------------
callgrind emulate emulate --dir "$tmp/v5" --key-algorithm es256 --listen 127.0.0.1:0
wait_for "emulate token" 60 test -L "$tmp/v5/..data"
sleep 0.5
finish "$last_pid"

wait "$idle_pid" || fail "sidecar-kubeconfig failed"
finish "$es256_pid"

# --- the order ----------------------------------------------------------------------------------
nm --defined-only "$bin" | awk 'NF == 3 && $2 ~ /^[tTwW]$/ { print $3 }' >"$tmp/symbols"
python3 - "$tmp" "$out" <<'PY'
import re, sys
tmp, out = sys.argv[1], sys.argv[2]
tiers = [("sidecar", ["sidecar-kubeconfig", "sidecar-in-cluster", "sidecar-pod", "sidecar-rsa"]),
         ("serve", ["serve-es256", "serve-rs256"]), ("emulate", ["emulate"])]
symbols = set(open(f"{tmp}/symbols").read().split())

def executed(label):
    # callgrind names each function once, where it first appears, as `fn=(N) name` or, for a
    # callee, `cfn=(N) name` (later only `(N)`): every one of them ran. A recursion level is
    # appended as `'2`; addresses without a symbol and valgrind's own entries are left out.
    for line in open(f"{tmp}/{label}.cg", errors="replace"):
        m = re.match(r"c?fn=\(\d+\) (.*)", line.rstrip("\n"))
        if m:
            name = re.sub(r"'\d+$", "", m.group(1))
            if name == "(below main)":  # valgrind's name for libc's start-up
                yield from ("__libc_start_main", "__libc_start_call_main")
            elif name in symbols:
                yield name

# Natively a few functions run that valgrind does not show (found with `perf record -e
# page-faults -d` on an ordered binary): glibc's start-up (_start, and every IFUNC resolver,
# which a static binary runs for all its IRELATIVE relocations before main), the vDSO set-up
# (valgrind gives no vDSO), and other variants of functions dispatched on CPU features (valgrind
# hides SHA-NI, ADX, AVX-512, ...): with sha256_block_data_order_avx also take its _hw, _nohw,
# ... siblings, with strcmp every __strcmp_* (sorted by variant, so the ones a CPU picks sit
# together).
START = ["_start", "frame_dummy", "register_tm_clones", "__libc_start_main", "__libc_start_main_impl", "__libc_start_call_main",
         "setup_vdso", "_dl_new_object", "_dl_setup_hash", "_dl_add_to_namespace_list",
         "_dl_lookup_symbol_x", "do_lookup_x", "check_match", "dl_vdso_vsym"]
START += sorted(s for s in symbols if s.endswith("_ifunc"))
VARIANT = ("sse2|ssse3|sse4_1|sse4_2|sse42|avx|avx2|avx512|avx512f|avx512bw|evex|evex512|generic|"
           "erms|unaligned|rtm|no_vzeroupper|movbe|bmi2|lzcnt|tzcnt|alt|hw|nohw|shaext|vaes|clmul|x86_64")

def family(name):
    """(family, variant) of a C function dispatched on CPU features, else (None, None)."""
    if name.startswith(("_ZN", "_R")):
        return None, None
    n = re.sub(r"\.(constprop|part|isra|cold)\.\d+$", "", name)
    n = re.sub(r"^aws_lc_\d+_\d+_\d+_", "", n)
    if re.fullmatch(r"handle_(amd|intel|zhaoxin)|intel_check_word", n):
        return "cacheinfo", n
    n = re.sub(r"^_+(libc_|new_)?", "", n)
    n = re.sub(r"_ifunc$", "", n)
    m = re.fullmatch(rf"(.+?)((?:_(?:{VARIANT}))+)", n)
    if m:
        return m.group(1), m.group(2)
    m = re.fullmatch(r"(ecp_nistz256_\w+?)([xq])", n)  # aws-lc's P-256: ...x with ADX, ...q
    if m:
        return m.group(1), m.group(2)
    return n, ""

families = {}
for s in symbols:
    f, v = family(s)
    if f is not None:
        families.setdefault(f, []).append((v, s))

order, seen = [], set()
def add(names):
    new = [n for n in names if n not in seen]
    seen.update(new)
    order.extend(new)
    return len(new)
counts = []
for tier, labels in tiers:
    if tier == "sidecar":
        counts.append(("start-up", add(n for n in START if n in symbols)))
    for label in labels:
        counts.append((label, add(executed(label))))
    if tier == "sidecar":
        siblings = set()
        for n in list(order):
            f, _ = family(n)
            if f is not None and len(families.get(f, [])) > 1:
                siblings.update(families[f])
        counts.append(("CPU variants", add(s for v, s in sorted(siblings))))
open(out, "w").write("".join(n + "\n" for n in order))
print(f"profile-functions.sh: {len(order)} functions in {out} (first seen: "
      + ", ".join(f"{label} {n}" for label, n in counts) + ")")
PY
