#!/usr/bin/env bash
# Instructions per request of each tds_bench arm, counted by callgrind.
#
# On a shared VM the rate of one request at a time moves by a third from minute to minute,
# and the benchmark's own rounds only average that out. Instruction counts do not move: the
# same binary and the same requests give the same count whatever else the machine does. This
# runs one arm of `examples/tds_bench.rs` at a time under callgrind, zeroes the counts once
# start-up is over (connections, TLS, the catalog), counts for a window of steady load, and
# divides by the queries the window sent: the calls of tiberius' `BatchRequest` encoder, which
# every arm calls once per query. The peer (pysqlbridge) runs outside valgrind and is not
# counted.
#
# With --demo w1|w2|w3 it counts the demo server (`mssql-mcp demo`, SQLite) instead, under
# examples/loadgen's workload of that name at --conc requests in flight (1 by default), per
# JSON-RPC message the server parsed (`mcp::protocol::parse`, once per request). loadgen runs
# outside valgrind.
#
# Usage: benches/instructions.sh [--bin PATH] [--workload w1x1] [--arms "plain batch hop server"]
#                                [--settle S] [--window S] [--keep DIR] [--lines]
#        benches/instructions.sh --demo w1|w2|w3 [--conc N] [--server PATH] [--settle S] [--window S] [--lines]
# Needs valgrind (callgrind, callgrind_control), python3, and the pysqlbridge venv tds_bench uses
# (PYSQLBRIDGE_PYTHON, or .ci/venv). Build first: cargo build --release --example tds_bench
# (for --demo: cargo build --release --bin mssql-mcp --example loadgen).
set -euo pipefail
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

bin=target/release/examples/tds_bench
workload=w1x1
arms="plain batch hop server"
settle=8
window=8
keep=""
lines=0
demo=""
demo_conc=1
server=target/release/mssql-mcp
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --workload) workload="$2"; shift 2 ;;
        --arms) arms="$2"; shift 2 ;;
        --settle) settle="$2"; shift 2 ;;
        --window) window="$2"; shift 2 ;;
        --keep) keep="$2"; shift 2 ;;
        --lines) lines=1; shift ;;
        --demo) demo="$2"; shift 2 ;;
        --conc) demo_conc="$2"; shift 2 ;;
        --server) server="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for tool in valgrind callgrind_control python3; do
    command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install -y valgrind python3)" >&2; exit 2; }
done
if [ -z "$demo" ] && [ ! -x "$bin" ]; then
    echo "$bin not found: cargo build --release --example tds_bench" >&2
    exit 2
fi
if [ -z "${PYSQLBRIDGE_PYTHON:-}" ] && [ -x .ci/venv/bin/python ]; then
    export PYSQLBRIDGE_PYTHON="$PWD/.ci/venv/bin/python"
fi
conc="${workload#*x}"
dump_instr=""
[ "$lines" = 1 ] && dump_instr="--dump-instr=yes"
extra_head=""
extra_rule=""
if [ "$lines" = 1 ]; then
    extra_head=" code lines (64 B) run per query | code pages (4 KiB) |"
    extra_rule="---:|---:|"
fi
work=$(mktemp -d)
[ -n "$keep" ] && mkdir -p "$keep"
trap 'rm -rf "$work"' EXIT

# Prints "| label | calls | instructions per call |" for a callgrind dump: its total over the
# calls of the function whose name matches the marker. With --lines (a dump made with
# --dump-instr=yes) it adds the distinct 64-byte lines and 4 KiB pages of code run at least
# once per call on average: the code a request touches, which a CPU that idled between
# requests pays for in cache and TLB misses (benches/README.md, session 20).
count() {
    python3 - "$1" "$2" "$3" "$lines" <<'PY'
import re, sys, collections
path, label, marker, lines = sys.argv[1], sys.argv[2], re.compile(sys.argv[3]), sys.argv[4] == "1"
names, total, calls, cfn, npos = {}, None, 0, None, 1
after_call, prev = False, [0, 0]
per_addr = collections.Counter()
def pos(tok, i):
    # Callgrind's position compression: "*" is the last value, "+n"/"-n" (decimal) are
    # relative to it; an address written whole is hexadecimal (0x...).
    if tok == "*":
        return prev[i]
    n = int(tok, 16) if "0x" in tok else int(tok)
    v = prev[i] + n if tok[0] in "+-" else n
    prev[i] = v
    return v
for line in open(path, errors="replace"):
    line = line.rstrip("\n")
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
    elif line.startswith("positions:"):
        npos = len(line.split()) - 1
    elif line and (line[0].isdigit() or line[0] in "+-*"):
        parts = line.split()
        if npos == 2:
            addr = pos(parts[0], 0)
            if len(parts) > 1:
                pos(parts[1], 1)
            # A line after calls= is the call's inclusive cost, not this address's own.
            if lines and not after_call and len(parts) > npos:
                per_addr[addr] += int(parts[npos])
        after_call = False
        continue
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        if m.group(1) == "cfn":
            cfn = names.get(m.group(2), "")
    elif line.startswith("calls="):
        after_call = True
        if cfn is not None and marker.search(cfn):
            calls += int(line.split("=")[1].split()[0])
if not total or calls < 20:
    sys.exit(f"{label}: too few requests counted ({calls}); raise --window")
row = f"| {label} | {calls} | {total / calls:,.0f} |"
if lines:
    hot = {a >> 6 for a, c in per_addr.items() if c >= 0.9 * calls}
    row += f" {len(hot):,} | {len({l >> 6 for l in hot}):,} |"
print(row)
PY
}

# Counts a window of steady load in the callgrind process $1: zeroed after the settle time,
# dumped after the window.
window_of() {
    sleep "$settle"
    callgrind_control -z "$1" >/dev/null 2>&1
    sleep "$window"
    callgrind_control -d "$1" >/dev/null 2>&1
}

# The dump `window_of` asked for (callgrind names it <out-file>.1), or a failure naming $2.
dump_of() {
    local dump
    dump=$(ls "$1".*1 2>/dev/null | head -1 || true)
    [ -n "$dump" ] || { echo "no callgrind dump for $2; log:" >&2; tail -20 "$3" >&2; exit 1; }
    echo "$dump"
}

if [ -n "$demo" ]; then
    loadgen=target/release/examples/loadgen
    for f in "$server" "$loadgen"; do
        [ -x "$f" ] || { echo "$f not found: cargo build --release --bin mssql-mcp --example loadgen" >&2; exit 2; }
    done
    command -v curl >/dev/null || { echo "curl not found" >&2; exit 2; }
    port=$(free_port)
    mkdir -p "$work/demo" "$work/data"
    valgrind --tool=callgrind $dump_instr --callgrind-out-file="$work/demo/cg" \
        "$server" demo --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/demo/log" 2>&1 &
    pid=$!
    wait_healthy "$port" "$work/demo/log" || { kill "$pid"; exit 1; }
    "$loadgen" "http://127.0.0.1:$port/claude/mcp" --workload "$demo" -c "$demo_conc" -t 1 \
        -d $((settle + window + 2)) >"$work/demo/loadgen" 2>&1 &
    lg=$!
    window_of "$pid"
    wait "$lg" || { echo "loadgen failed; output:" >&2; tail -20 "$work/demo/loadgen" >&2; }
    kill -TERM "$pid"
    wait "$pid" || true
    dump=$(dump_of "$work/demo/cg" demo "$work/demo/log")
    [ -n "$keep" ] && cp "$dump" "$keep/demo-$demo-c$demo_conc.callgrind"
    echo "| demo workload | requests counted | instructions per request |$extra_head"
    echo "|---|---:|---:|$extra_rule"
    count "$dump" "$demo x$demo_conc" "mssql_mcp::mcp::protocol::parse$"
    exit 0
fi

echo "| arm | queries counted | instructions per query |$extra_head"
echo "|---|---:|---:|$extra_rule"
for arm in $arms; do
    out="$work/$arm"
    mkdir -p "$out"
    # Measures for longer than the settle time and the window together, and then stops by
    # itself (and stops its peer).
    valgrind --tool=callgrind $dump_instr --callgrind-out-file="$out/cg" \
        "$bin" --secs $((settle + window + 2)) --warmup 0 --rounds 1 --conc "$conc" \
        --only "$workload:$arm" --workers 1 >"$out/log" 2>&1 &
    pid=$!
    window_of "$pid"
    wait "$pid" || { echo "tds_bench failed for $arm; log:" >&2; tail -20 "$out/log" >&2; exit 1; }
    dump=$(dump_of "$out/cg" "$arm" "$out/log")
    [ -n "$keep" ] && cp "$dump" "$keep/$workload-$arm.callgrind"
    count "$dump" "$arm" "BatchRequest as .*Encode<.*>>::encode$"
done
