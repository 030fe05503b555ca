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
# Usage: benches/instructions.sh [--bin PATH] [--workload w1x1] [--arms "plain batch hop server"]
#                                [--settle S] [--window S] [--keep DIR]
# Needs valgrind (callgrind, callgrind_control), python3, and the pysqlbridge venv tds_bench uses
# (PYSQLBRIDGE_PYTHON, or .ci/venv). Build first: cargo build --release --example tds_bench
set -euo pipefail

bin=target/release/examples/tds_bench
workload=w1x1
arms="plain batch hop server"
settle=8
window=8
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --workload) workload="$2"; shift 2 ;;
        --arms) arms="$2"; shift 2 ;;
        --settle) settle="$2"; shift 2 ;;
        --window) window="$2"; shift 2 ;;
        --keep) keep="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for tool in valgrind callgrind_control python3; do
    command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install -y valgrind python3)" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "$bin not found: cargo build --release --example tds_bench" >&2; exit 2; }
if [ -z "${PYSQLBRIDGE_PYTHON:-}" ] && [ -x .ci/venv/bin/python ]; then
    export PYSQLBRIDGE_PYTHON="$PWD/.ci/venv/bin/python"
fi
conc="${workload#*x}"
work=$(mktemp -d)
[ -n "$keep" ] && mkdir -p "$keep"
trap 'rm -rf "$work"' EXIT

echo "| arm | queries counted | instructions per query |"
echo "|---|---:|---:|"
for arm in $arms; do
    out="$work/$arm"
    mkdir -p "$out"
    # Measures for longer than the settle time and the window together, and then stops by
    # itself (and stops its peer).
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
        "$bin" --secs $((settle + window + 2)) --warmup 0 --rounds 1 --conc "$conc" \
        --only "$workload:$arm" --workers 1 >"$out/log" 2>&1 &
    pid=$!
    sleep "$settle"
    callgrind_control -z "$pid" >/dev/null 2>&1
    sleep "$window"
    callgrind_control -d "$pid" >/dev/null 2>&1
    wait "$pid" || { echo "tds_bench failed for $arm; log:" >&2; tail -20 "$out/log" >&2; exit 1; }
    dump=$(ls "$out"/cg.*1 2>/dev/null | head -1 || true)
    [ -n "$dump" ] || { echo "no callgrind dump for $arm; log:" >&2; tail -20 "$out/log" >&2; exit 1; }
    [ -n "$keep" ] && cp "$dump" "$keep/$workload-$arm.callgrind"
    python3 - "$dump" "$arm" <<'EOF'
import re, sys
path, arm = sys.argv[1], sys.argv[2]
names, total, calls, cfn = {}, None, 0, None
marker = re.compile(r"BatchRequest as .*Encode<.*>>::encode$")
for line in open(path, errors="replace"):
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
    elif line.startswith("cfn="):
        m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.strip())
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2)
            cfn = names.get(m.group(1), "")
        else:
            cfn = line.strip()[4:]
    elif line.startswith("fn="):
        m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.strip())
        if m and m.group(2):
            names[m.group(1)] = m.group(2)
    elif line.startswith("calls=") and cfn is not None and marker.search(cfn):
        calls += int(line.split("=")[1].split()[0])
if not total or calls < 20:
    sys.exit(f"{arm}: too few queries counted ({calls}); raise --window")
print(f"| {arm} | {calls} | {total / calls:,.0f} |")
EOF
done
