#!/usr/bin/env bash
# Benchmark of mssql-mcp's demo server (and optionally DBHub 1.4.0 on the same data) under HTTP
# load from examples/loadgen.rs (default) or wrk with benches/mcp.lua (--generator wrk).
# See benches/README.md. Loopback only; every load run is bounded by its duration; everything
# this script starts is stopped on exit.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: benches/run.sh [--quick] [--duration N] [--rounds N] [--with-dbhub] [--generator rust|wrk] [--no-build] [--out FILE] [--strict]

  --quick        3 s per run (default 10 s) and a 1 s warm-up (default 2 s)
  --duration N   N seconds per measured run
  --warmup N     N seconds of warm-up before each measured run (0 = none)
  --rounds N     run every workload N times (default 1), alternating the servers round by round
                 (both stay up); the comparison and the targets use the median of the per-round
                 ratios, and the worst round's p99
  --with-dbhub   also run W1 (1 and 32 conns) and W2 against DBHub 1.4.0 on Node 22, same
                 demo.sqlite, and print the comparison (installs both into benches/.deps/ if absent)
  --generator G  the load generator: `rust` (default; examples/loadgen.rs, one thread) or `wrk`
                 (wrk -t2 with benches/mcp.lua). Both send the same requests and check every response
  --no-build     do not run `cargo build --release` (and `--example loadgen`) first
  --out FILE     also write the markdown report to FILE
  --strict       exit 3 if a target from issue #2 is missed (errors always exit 1)

Environment:
  BENCH_SERVER   server binary            (default: target/release/mssql-mcp, built first)
  BENCH_LOADGEN  load generator binary    (default: target/release/examples/loadgen, built first)
  BENCH_NODE     Node >= 22.5 binary      (default: benches/.deps/node/.../bin/node, else `node` on PATH if >= 22.5)
  BENCH_DBHUB    DBHub's dist/index.js    (default: benches/.deps/dbhub/node_modules/@bytebase/dbhub/dist/index.js)
  BENCH_NO_INSTALL=1  never install Node/DBHub; print how to instead
EOF
}

DURATION=10
WARMUP=2
WITH_DBHUB=0
BUILD=1
OUT=""
STRICT=0
GENERATOR=rust
ROUNDS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) DURATION=3; WARMUP=1 ;;
    --duration) DURATION="${2:?--duration needs a value}"; shift ;;
    --duration=*) DURATION="${1#*=}" ;;
    --warmup) WARMUP="${2:?--warmup needs a value}"; shift ;;
    --warmup=*) WARMUP="${1#*=}" ;;
    --with-dbhub) WITH_DBHUB=1 ;;
    --rounds) ROUNDS="${2:?--rounds needs a value}"; shift ;;
    --rounds=*) ROUNDS="${1#*=}" ;;
    --generator) GENERATOR="${2:?--generator needs rust or wrk}"; shift ;;
    --generator=*) GENERATOR="${1#*=}" ;;
    --no-build) BUILD=0 ;;
    --out) OUT="${2:?--out needs a value}"; shift ;;
    --out=*) OUT="${1#*=}" ;;
    --strict) STRICT=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$GENERATOR" in rust|wrk) ;; *) echo "--generator takes rust or wrk" >&2; exit 2 ;; esac
case "$DURATION$WARMUP$ROUNDS" in *[!0-9]*) echo "--duration/--warmup/--rounds take whole numbers" >&2; exit 2 ;; esac
[ "$ROUNDS" -ge 1 ] || { echo "--rounds must be >= 1" >&2; exit 2; }
[ "$DURATION" -ge 1 ] || { echo "--duration must be >= 1" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/benches"
LUA="$BENCH/mcp.lua"
DEPS="$BENCH/.deps"
DBHUB_VERSION=1.4.0

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------- cleanup of what we start
PIDS=()
WORK=""
cleanup() {
  local rc=$?
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
      for f in "$WORK"/*.log; do
        [ -f "$f" ] || continue
        printf '[bench] --- last lines of %s\n' "$(basename "$f")" >&2
        tail -n 15 "$f" >&2 || true
      done
    fi
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
if [ "$GENERATOR" = wrk ]; then
  command -v wrk >/dev/null || die "wrk not found. Install it: apt-get install -y wrk (Debian/Ubuntu), brew install wrk (macOS)"
  [ -f "$LUA" ] || die "missing $LUA"
fi
command -v curl >/dev/null || die "curl not found"

if [ "$BUILD" = 1 ] && { [ -z "${BENCH_SERVER:-}" ] || { [ "$GENERATOR" = rust ] && [ -z "${BENCH_LOADGEN:-}" ]; }; }; then
  log "cargo build --release --bin mssql-mcp --example loadgen"
  (cd "$ROOT" && cargo build --release --quiet --bin mssql-mcp --example loadgen) || die "cargo build --release failed"
fi
SERVER="${BENCH_SERVER:-$ROOT/target/release/mssql-mcp}"
[ -x "$SERVER" ] || die "server binary not found: $SERVER (run cargo build --release, or set BENCH_SERVER)"
LOADGEN="${BENCH_LOADGEN:-$ROOT/target/release/examples/loadgen}"
if [ "$GENERATOR" = rust ]; then
  [ -x "$LOADGEN" ] || die "load generator not found: $LOADGEN (run cargo build --release --example loadgen, or set BENCH_LOADGEN)"
fi

node_ok() { # $1 = node binary; true if >= 22.5
  local v
  v="$("$1" -p 'process.versions.node' 2>/dev/null)" || return 1
  local major="${v%%.*}" rest="${v#*.}"
  local minor="${rest%%.*}"
  [ "$major" -gt 22 ] || { [ "$major" -eq 22 ] && [ "$minor" -ge 5 ]; }
}

node_arch() {
  case "$(uname -m)" in
    x86_64|amd64) echo x64 ;;
    aarch64|arm64) echo arm64 ;;
    *) die "no node-linux-* npm package for $(uname -m); set BENCH_NODE to a Node >= 22.5" ;;
  esac
}

install_hint() {
  cat >&2 <<EOF
[bench] To install DBHub's dependencies by hand (any npm works; Node 22 is only needed to run it):
[bench]   npm install --prefix benches/.deps/node --no-audit --no-fund node-linux-$(node_arch)@22
[bench]   npm install --prefix benches/.deps/dbhub --no-audit --no-fund --omit=optional @bytebase/dbhub@$DBHUB_VERSION
[bench] or point BENCH_NODE at a Node >= 22.5 and BENCH_DBHUB at @bytebase/dbhub@$DBHUB_VERSION's dist/index.js.
EOF
}

resolve_dbhub() {
  local arch; arch="$(node_arch)"
  if [ -n "${BENCH_NODE:-}" ]; then
    NODE="$BENCH_NODE"
  elif [ -x "$DEPS/node/node_modules/node-linux-$arch/bin/node" ]; then
    NODE="$DEPS/node/node_modules/node-linux-$arch/bin/node"
  elif command -v node >/dev/null && node_ok "$(command -v node)"; then
    NODE="$(command -v node)"
  else
    [ "${BENCH_NO_INSTALL:-0}" = 1 ] && { install_hint; die "no Node >= 22.5 found"; }
    command -v npm >/dev/null || { install_hint; die "no Node >= 22.5 and no npm to install it"; }
    log "installing Node 22 into benches/.deps/node (npm node-linux-$arch@22)"
    npm install --prefix "$DEPS/node" --no-audit --no-fund --loglevel=error "node-linux-$arch@22" >&2 \
      || { install_hint; die "npm install of Node 22 failed"; }
    NODE="$DEPS/node/node_modules/node-linux-$arch/bin/node"
  fi
  node_ok "$NODE" || die "$NODE is not Node >= 22.5 (DBHub $DBHUB_VERSION needs it)"

  if [ -n "${BENCH_DBHUB:-}" ]; then
    DBHUB="$BENCH_DBHUB"
  else
    DBHUB="$DEPS/dbhub/node_modules/@bytebase/dbhub/dist/index.js"
    if [ ! -f "$DBHUB" ]; then
      [ "${BENCH_NO_INSTALL:-0}" = 1 ] && { install_hint; die "DBHub not found at $DBHUB"; }
      command -v npm >/dev/null || { install_hint; die "DBHub not found and no npm to install it"; }
      log "installing @bytebase/dbhub@$DBHUB_VERSION into benches/.deps/dbhub"
      PATH="$(dirname "$NODE"):$PATH" npm install --prefix "$DEPS/dbhub" --no-audit --no-fund \
        --loglevel=error --omit=optional "@bytebase/dbhub@$DBHUB_VERSION" >&2 \
        || { install_hint; die "npm install of DBHub failed"; }
    fi
  fi
  [ -f "$DBHUB" ] || { install_hint; die "DBHub not found at $DBHUB"; }
  local pkg; pkg="$(dirname "$(dirname "$DBHUB")")/package.json"
  DBHUB_REAL_VERSION="$("$NODE" -p "require('$pkg').version" 2>/dev/null || echo '?')"
  [ "$DBHUB_REAL_VERSION" = "$DBHUB_VERSION" ] || log "warning: DBHub at $DBHUB is version $DBHUB_REAL_VERSION, not $DBHUB_VERSION"
}
[ "$WITH_DBHUB" = 1 ] && resolve_dbhub

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcp-bench.XXXXXX")"
DATA="$WORK/data"
mkdir -p "$DATA"

# ---------------------------------------------------------------- helpers
rss_kb() { # $1 = pid, $2 = VmRSS|VmHWM
  local k v _
  while read -r k v _; do
    [ "$k" = "$2:" ] && { echo "$v"; return; }
  done < "/proc/$1/status"
  echo 0
}

mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }

ms() { # microseconds -> "x.xx ms"
  awk -v u="$1" 'BEGIN { m = u / 1000; if (m >= 100) printf "%.0f ms", m; else if (m >= 10) printf "%.1f ms", m; else printf "%.2f ms", m }'
}

wait_for_line() { # $1 = log file, $2 = extended regex with the URL, $3 = pid; prints first match
  local i line
  for i in $(seq 1 300); do
    line="$(grep -aoE "$2" "$1" 2>/dev/null | head -n 1 || true)"
    [ -n "$line" ] && { echo "$line"; return 0; }
    kill -0 "$3" 2>/dev/null || { log "server exited during start-up"; return 1; }
    sleep 0.1
  done
  log "server did not come up within 30 s"
  return 1
}

# The JSON-RPC body the Lua script sends, for the curl smoke check.
body_for() { # $1 = workload, $2 = id
  local meta='"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}'
  case "$1" in
    w1) printf '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"execute_sql","arguments":{"sql":"SELECT * FROM customers WHERE customer_id = 4321"},%s}}' "$2" "$meta" ;;
    w2) printf '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"execute_sql","arguments":{"sql":"SELECT * FROM orders WHERE order_id > 14900 ORDER BY order_id LIMIT 100"},%s}}' "$2" "$meta" ;;
    w3) printf '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"fetch","arguments":{"id":"main.customers/4321"},%s}}' "$2" "$meta" ;;
  esac
}

smoke() { # $1 = label, $2 = url, $3 = workload
  local tool=execute_sql code body
  [ "$3" = w3 ] && tool=fetch
  body="$WORK/smoke.out"
  code="$(curl -sS -o "$body" -w '%{http_code}' --max-time 10 \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
    -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/call' -H "Mcp-Name: $tool" \
    --data-binary "$(body_for "$3" 7)" "$2")" || code=000
  if [ "$code" != 200 ] || ! grep -q '"result":' "$body" || grep -q '"isError":true' "$body"; then
    log "smoke check failed for $1 $3: HTTP $code: $(head -c 400 "$body" 2>/dev/null)"
    return 1
  fi
}

# Background sampler: max VmRSS of $1 every 100 ms, written to $2.
start_sampler() {
  local pid="$1" file="$2"
  (
    max=0
    while kill -0 "$pid" 2>/dev/null; do
      while read -r k v _; do
        if [ "$k" = "VmRSS:" ]; then
          [ "$v" -gt "$max" ] && { max=$v; echo "$max" > "$file"; }
          break
        fi
      done < "/proc/$pid/status" 2>/dev/null || true
      sleep 0.1
    done
  ) &
  SAMPLER=$!
  PIDS+=("$SAMPLER")
}
stop_sampler() { kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; }

TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"
cpu_busy() { # jiffies all CPUs spent not idle (idle and iowait excluded)
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}
proc_cpu() { # utime + stime of a process, in jiffies
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
children_cpu() { # user + sys seconds of this shell's waited-for children (`times`, 2nd line)
  # `times` must run in this shell (not in a pipe or $(...)): write it to a file first.
  times > "$WORK/times.out"
  awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); sub(/s$/, "", p[2]); t += p[1] * 60 + p[2] } printf "%.3f", t }' "$WORK/times.out"
}

RESULTS="$WORK/results.tsv"   # server workload conns rps p50 p99 max errors rss_run_kb cpu/req srv_s gen_s other_s kb round
: > "$RESULTS"
TOTAL_ERRORS=0

load() { # $1 = url, $2 = workload, $3 = connections, $4 = seconds; prints a BENCH_RESULT line
  if [ "$GENERATOR" = rust ]; then
    "$LOADGEN" "$1" --workload "$2" --connections "$3" --threads 1 --duration "$4" --timeout 10
  else
    local threads=2
    [ "$3" -lt 2 ] && threads=1
    wrk -t"$threads" -c"$3" -d"${4}s" --timeout 10s --latency -s "$LUA" "$1" -- "$2"
  fi
}

run_load() { # $1 = server label, $2 = url, $3 = pid, $4 = workload, $5 = connections, $6 = round
  local label="$1" url="$2" pid="$3" wl="$4" conns="$5" round="$6" out line
  if [ "$WARMUP" -gt 0 ]; then
    load "$url" "$wl" "$conns" "$WARMUP" > "$WORK/warmup.out" 2>&1 || true
  fi
  echo 0 > "$WORK/rss.max"
  start_sampler "$pid" "$WORK/rss.max"
  out="$WORK/$label-$wl-$conns-$round.out"
  log "$label $wl, $conns conn(s), ${DURATION}s$( [ "$ROUNDS" -gt 1 ] && echo ", round $round/$ROUNDS")"
  local busy0 srv0 kids0 busy1 srv1 kids1
  children_cpu > "$WORK/kids0"
  busy0="$(cpu_busy)"; srv0="$(proc_cpu "$pid")"; kids0="$(cat "$WORK/kids0")"
  load "$url" "$wl" "$conns" "$DURATION" > "$out" 2>&1 \
    || { stop_sampler; cat "$out" >&2; die "the load generator ($GENERATOR) failed"; }
  busy1="$(cpu_busy)"; srv1="$(proc_cpu "$pid")"
  children_cpu > "$WORK/kids1"; kids1="$(cat "$WORK/kids1")"
  stop_sampler
  # CPU seconds over the run: the server, the load generator (children of this shell), everything else
  local srv_s gen_s other_s
  srv_s="$(awk -v a="$srv0" -v b="$srv1" -v t="$TCK" 'BEGIN { printf "%.2f", (b - a) / t }')"
  gen_s="$(awk -v a="$kids0" -v b="$kids1" 'BEGIN { printf "%.2f", b - a }')"
  other_s="$(awk -v a="$busy0" -v b="$busy1" -v t="$TCK" -v s="$srv_s" -v w="$gen_s" \
    'BEGIN { o = (b - a) / t - s - w; if (o < 0) o = 0; printf "%.2f", o }')"
  line="$(grep '^BENCH_RESULT ' "$out" || true)"
  [ -n "$line" ] || { cat "$out" >&2; die "no BENCH_RESULT line from the load generator"; }
  local requests=0 bytes=0 rps=0 p50_us=0 p99_us=0 max_us=0 non200=0 no_result=0 is_error=0 socket_errors=0 kv
  for kv in ${line#BENCH_RESULT }; do
    case "$kv" in
      requests=*) requests="${kv#*=}" ;; rps=*) rps="${kv#*=}" ;; bytes=*) bytes="${kv#*=}" ;;
      p50_us=*) p50_us="${kv#*=}" ;; p99_us=*) p99_us="${kv#*=}" ;; max_us=*) max_us="${kv#*=}" ;;
      non200=*) non200="${kv#*=}" ;; no_result=*) no_result="${kv#*=}" ;;
      is_error=*) is_error="${kv#*=}" ;; socket_errors=*) socket_errors="${kv#*=}" ;;
    esac
  done
  local errors=$((non200 + no_result + is_error + socket_errors))
  if [ "$errors" -gt 0 ]; then
    log "$label $wl/$conns: $errors error(s): non-200=$non200 no-result=$no_result isError=$is_error socket=$socket_errors"
    grep '^BENCH_FIRST_BAD ' "$out" | head -n 1 | cut -c1-400 >&2 || true
    TOTAL_ERRORS=$((TOTAL_ERRORS + errors))
  fi
  if [ "$requests" -eq 0 ]; then
    log "$label $wl/$conns: no request completed"
    TOTAL_ERRORS=$((TOTAL_ERRORS + 1))
  fi
  local cpu_per_req resp_kb
  cpu_per_req="$(awk -v s="$srv_s" -v n="$requests" 'BEGIN { if (n > 0) printf "%.0f", s * 1e6 / n; else print 0 }')"
  resp_kb="$(awk -v b="$bytes" -v n="$requests" 'BEGIN { if (n > 0) printf "%.1f", b / n / 1024; else print 0 }')"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$wl" "$conns" "$rps" "$p50_us" "$p99_us" \
    "$max_us" "$errors" "$(cat "$WORK/rss.max")" "$cpu_per_req" "$srv_s" "$gen_s" "$other_s" "$resp_kb" "$round" >> "$RESULTS"
}

declare -A IDLE_KB PEAK_KB URL PID SPECS READY

ready_server() { # $1 = label: idle RSS now, then one smoke request per workload
  local label="$1" spec
  IDLE_KB[$label]="$(rss_kb "${PID[$label]}" VmRSS)"
  for spec in ${SPECS[$label]}; do
    smoke "$label" "${URL[$label]}" "${spec%%:*}" || { TOTAL_ERRORS=$((TOTAL_ERRORS + 1)); return 1; }
  done
  READY[$label]=1
}

bench_round() { # $1 = label, $2 = round
  local label="$1" spec
  [ "${READY[$label]:-0}" = 1 ] || return 0
  for spec in ${SPECS[$label]}; do
    run_load "$label" "${URL[$label]}" "${PID[$label]}" "${spec%%:*}" "${spec##*:}" "$2"
    kill -0 "${PID[$label]}" 2>/dev/null || die "$label died during the run"
  done
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# ---------------------------------------------------------------- start both servers
log "starting mssql-mcp demo ($SERVER)"
"$SERVER" demo --listen 127.0.0.1:0 --data-dir "$DATA" > "$WORK/mssql-mcp.log" 2>&1 &
PID[mssql-mcp]=$!
PIDS+=("${PID[mssql-mcp]}")
URL[mssql-mcp]="$(wait_for_line "$WORK/mssql-mcp.log" 'http://127\.0\.0\.1:[0-9]+/claude/mcp' "${PID[mssql-mcp]}")" || die "mssql-mcp did not start"
SPECS[mssql-mcp]="w1:1 w1:32 w2:32 w3:32"
sleep 0.5 # let start-up allocations settle before reading the idle RSS
log "mssql-mcp at ${URL[mssql-mcp]} (pid ${PID[mssql-mcp]})"
ready_server mssql-mcp || true
SERVERS=(mssql-mcp)

if [ "$WITH_DBHUB" = 1 ]; then
  [ -f "$DATA/demo.sqlite" ] || die "no $DATA/demo.sqlite to give DBHub"
  log "starting DBHub $DBHUB_REAL_VERSION on $("$NODE" --version) ($DBHUB)"
  "$NODE" "$DBHUB" --transport http --host 127.0.0.1 --port 0 --dsn "sqlite://$DATA/demo.sqlite" \
    > "$WORK/dbhub.log" 2>&1 &
  PID[dbhub]=$!
  PIDS+=("${PID[dbhub]}")
  port="$(wait_for_line "$WORK/dbhub.log" 'listening on 127\.0\.0\.1:[0-9]+' "${PID[dbhub]}")" || die "DBHub did not start"
  URL[dbhub]="http://127.0.0.1:${port##*:}/mcp"
  SPECS[dbhub]="w1:1 w1:32 w2:32"
  sleep 0.5
  log "DBHub at ${URL[dbhub]} (pid ${PID[dbhub]})"
  ready_server dbhub || true
  SERVERS+=(dbhub)
fi

# ---------------------------------------------------------------- rounds: the servers take turns
# going first, so a slow spell of the machine does not always land on the same one. The server
# not being measured sits idle.
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order=("${SERVERS[@]}"); else order=(); for l in "${SERVERS[@]}"; do order=("$l" "${order[@]}"); done; fi
  for l in "${order[@]}"; do bench_round "$l" "$round"; done
done
for l in "${SERVERS[@]}"; do
  PEAK_KB[$l]="$(rss_kb "${PID[$l]}" VmHWM)"
  stop_pid "${PID[$l]}"
done

# ---------------------------------------------------------------- report
report() {
  local cpu mem rev
  cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  mem="$(free -g | awk '/^Mem:/ { print $2 " GiB total, " $7 " GiB available" }')"
  rev="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
  (cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null) || rev="$rev+dirty"
  echo "### Benchmark $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- command: \`benches/run.sh$ARGS_TEXT\` (${DURATION} s per run after a ${WARMUP} s warm-up)"
  local gen="examples/loadgen.rs (one thread)"
  if [ "$GENERATOR" = wrk ]; then
    # `wrk -v` exits non-zero after printing its version
    gen="wrk $( (wrk -v 2>&1 || true) | head -n1 | awk '{print $2}') with benches/mcp.lua (-t2; -t1 at 1 conn)"
  fi
  echo "- machine: $(nproc) cores, $cpu, $mem; load generator $gen on the same cores"
  echo "- mssql-mcp $rev$( [ "$WITH_DBHUB" = 1 ] && echo ", DBHub $DBHUB_REAL_VERSION on Node $("$NODE" -p process.versions.node)")"
  echo
  echo "| round | server | workload | conns | req/s | p50 | p99 | max | errors | RSS max during run | server CPU/req | response | CPU s: server / load gen / other |"
  echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  local s w c rps p50 p99 mx err rss cpr srv gen_s oth kb rd
  while IFS=$'\t' read -r s w c rps p50 p99 mx err rss cpr srv gen_s oth kb rd; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s µs | %s KB | %s / %s / %s |\n' "$rd" "$s" "$(wl_name "$w")" "$c" \
      "$(awk -v r="$rps" 'BEGIN { printf "%.0f", r }')" "$(ms "$p50")" "$(ms "$p99")" "$(ms "$mx")" "$err" "$(mb "$rss")" \
      "$cpr" "$kb" "$srv" "$gen_s" "$oth"
  done < "$RESULTS"
  echo
  echo "CPU s = CPU seconds used during the ${DURATION} s run (at most $((DURATION * $(nproc))) on $(nproc) cores); a large"
  echo "\"other\" means something else on the machine competed for the cores and the run is noisy."
  echo
  local l
  for l in mssql-mcp dbhub; do
    [ -n "${IDLE_KB[$l]:-}" ] || continue
    echo "- $l RSS: idle $(mb "${IDLE_KB[$l]}") (after start-up, before any request), peak $(mb "${PEAK_KB[$l]:-0}") (VmHWM after all runs)"
  done
  if [ "$WITH_DBHUB" = 1 ]; then
    echo
    if [ "$ROUNDS" -gt 1 ]; then
      echo "Medians over $ROUNDS rounds; the ratio is the median of the per-round ratios (range in brackets); p99 is the worst round's."
      echo
    fi
    echo "| workload | conns | mssql-mcp req/s | DBHub req/s | ratio | mssql-mcp p99 | DBHub p99 |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for spec in w1:1 w1:32 w2:32; do
      w="${spec%%:*}"; c="${spec##*:}"
      [ -n "$(median mssql-mcp "$w" "$c" 4)" ] && [ -n "$(median dbhub "$w" "$c" 4)" ] || continue
      local range=""
      [ "$ROUNDS" -gt 1 ] && range=" ($(ratios "$w" "$c" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.1f–%.1f", lo, hi }'))"
      printf '| %s | %s | %s | %s | %s×%s | %s | %s |\n' "$(wl_name "$w")" "$c" \
        "$(awk -v r="$(median mssql-mcp "$w" "$c" 4)" 'BEGIN { printf "%.0f", r }')" \
        "$(awk -v r="$(median dbhub "$w" "$c" 4)" 'BEGIN { printf "%.0f", r }')" \
        "$(ratio_median "$w" "$c")" "$range" "$(ms "$(worst mssql-mcp "$w" "$c" 6)")" "$(ms "$(worst dbhub "$w" "$c" 6)")"
    done
  fi
  echo
  targets
}

wl_name() {
  case "$1" in
    w1) echo "W1 point lookup (execute_sql)" ;;
    w2) echo "W2 100 rows (execute_sql)" ;;
    w3) echo "W3 fetch row" ;;
  esac
}

get() { # server workload conns column(4=rps 6=p99): one value per round, in round order
  awk -F'\t' -v s="$1" -v w="$2" -v c="$3" -v k="$4" '$1==s && $2==w && $3==c { print $15 "\t" $k }' "$RESULTS" \
    | sort -n | cut -f2
}
median() { # server workload conns column: the median over rounds (the mean of the middle two)
  get "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
worst() { # server workload conns column: the largest over rounds
  get "$@" | sort -g | tail -n 1
}
ratios() { # workload conns: mssql-mcp req/s ÷ DBHub req/s, one per round
  paste <(get mssql-mcp "$1" "$2" 4) <(get dbhub "$1" "$2" 4) | awk -F'\t' '$2 > 0 { printf "%.2f\n", $1 / $2 }'
}
ratio_median() { # workload conns: the median of the per-round ratios, one decimal
  ratios "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print 0; exit } m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f", m }'
}

MISSED=0
check() { # description, value text, ok(0/1)
  if [ "$3" = 1 ]; then echo "- [met] $1: $2"; else echo "- [MISSED] $1: $2"; MISSED=$((MISSED + 1)); fi
}
targets() {
  echo "Targets (issue #2, 2-core machine, load generator included):"
  local v ok r
  if [ "$WITH_DBHUB" = 1 ]; then
    for spec in "w1:32:20" "w2:32:10"; do
      IFS=: read -r w c want <<< "$spec"
      r="$(ratio_median "$w" "$c")"
      ok="$(awk -v r="$r" -v t="$want" 'BEGIN { print (r >= t) ? 1 : 0 }')"
      check "$(wl_name "$w") at $c conns >= ${want}× DBHub" "${r}×" "$ok"
    done
  fi
  for c in 1 32; do
    v="$(worst mssql-mcp w1 "$c" 6)"
    [ -n "$v" ] || continue
    check "W1 p99 < 5 ms at $c conn(s)" "$(ms "$v")" "$([ "$v" -lt 5000 ] && echo 1 || echo 0)"
  done
  v="${IDLE_KB[mssql-mcp]:-0}"
  check "idle RSS < 20 MB" "$(mb "$v")" "$([ "$v" -lt 20480 ] && echo 1 || echo 0)"
  v="${PEAK_KB[mssql-mcp]:-0}"
  check "RSS under load < 64 MB" "$(mb "$v")" "$([ "$v" -lt 65536 ] && echo 1 || echo 0)"
}

ARGS_TEXT=""
[ "$DURATION" != 10 ] && ARGS_TEXT="$ARGS_TEXT --duration $DURATION"
[ "$WARMUP" != 2 ] && ARGS_TEXT="$ARGS_TEXT --warmup $WARMUP"
[ "$ROUNDS" != 1 ] && ARGS_TEXT="$ARGS_TEXT --rounds $ROUNDS"
[ "$WITH_DBHUB" = 1 ] && ARGS_TEXT="$ARGS_TEXT --with-dbhub"
[ "$GENERATOR" != rust ] && ARGS_TEXT="$ARGS_TEXT --generator $GENERATOR"

REPORT="$WORK/report.md"
report > "$REPORT"
cat "$REPORT"
[ -n "$OUT" ] && cp "$REPORT" "$OUT"

if [ "$TOTAL_ERRORS" -gt 0 ]; then
  log "FAILED: $TOTAL_ERRORS error response(s); the numbers above are not valid"
  exit 1
fi
if [ "$STRICT" = 1 ] && [ "$MISSED" -gt 0 ]; then
  log "$MISSED target(s) missed (--strict)"
  exit 3
fi
