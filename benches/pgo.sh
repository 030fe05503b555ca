#!/usr/bin/env bash
# A profile-guided (PGO) release build of mssql-mcp, trained on the benchmark workloads.
#
# On a VM whose CPUs idle between requests (one request in flight against a slow database),
# a request's time is mostly cache and TLB misses on the code it runs, not the instructions
# themselves (benches/README.md, session 20). PGO lets LLVM lay the code out by how often it
# runs: hot paths fall through, cold blocks move away, and hot functions are grouped. On the
# W1 point lookup through the server it cuts the 4 KiB pages of code a request touches by 44%
# (410 -> 231) and the 64-byte lines by a fifth (4,597 -> 3,722).
#
# Steps (about 35 minutes on 2 cores, most of it two fat-LTO builds):
#   1. build mssql-mcp, examples/tds_bench and examples/loadgen instrumented
#      (-Cprofile-generate) into target/pgo-gen;
#   2. train: tds_bench's W1 and W2 at 1 and 32 in flight against pysqlbridge (the SQL Server
#      path), then `mssql-mcp demo` under loadgen's w1, w2 and w3 (the SQLite demo, search and
#      fetch), each for a few seconds;
#   3. merge the server-side profiles with llvm-profdata (rustup component llvm-tools);
#   4. build the same three with -Cprofile-use into target/pgo.
#
# The binary to deploy is then target/pgo/release/mssql-mcp (strip it as the Dockerfile does).
# target/pgo/release/examples/tds_bench measures it: every arm of that binary, the plain
# tiberius client included, is built from the same profile.
#
# Usage: benches/pgo.sh [--profile FILE]   (keeps the merged profile at FILE)
# Needs what tds_bench needs (the pysqlbridge venv: PYSQLBRIDGE_PYTHON or .ci/venv), curl,
# python3, and llvm-profdata from the toolchain (rustup component llvm-tools, added when missing).
set -euo pipefail
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

profile_out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile_out="$2"; shift 2 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

sysroot=$(rustc --print sysroot)
find_profdata() { ls "$sysroot"/lib/rustlib/*/bin/llvm-profdata 2>/dev/null | head -1 || true; }
profdata=$(find_profdata)
# A fresh machine has rustup's toolchain without its LLVM tools: fetch them (once).
if [ ! -x "$profdata" ] && command -v rustup >/dev/null; then
    rustup component add llvm-tools >&2 || true
    profdata=$(find_profdata)
fi
[ -x "$profdata" ] || { echo "llvm-profdata not found under $sysroot: rustup component add llvm-tools" >&2; exit 2; }
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 2; }
done
if [ -z "${PYSQLBRIDGE_PYTHON:-}" ] && [ -x .ci/venv/bin/python ]; then
    export PYSQLBRIDGE_PYTHON="$PWD/.ci/venv/bin/python"
fi
[ -n "${PYSQLBRIDGE_PYTHON:-}" ] || { echo "no pysqlbridge venv: set PYSQLBRIDGE_PYTHON or run .ci/run once" >&2; exit 2; }

work=$(mktemp -d)
demo_pid=""
cleanup() {
    [ -n "$demo_pid" ] && kill "$demo_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
raw="$work/raw"
mkdir -p "$raw"
targets=(--bin mssql-mcp --example tds_bench --example loadgen)

echo "pgo: 1/4 instrumented build (target/pgo-gen)" >&2
CARGO_TARGET_DIR=target/pgo-gen RUSTFLAGS="-Cprofile-generate=$raw/build" \
    cargo build --release --locked "${targets[@]}"
gen=target/pgo-gen/release

echo "pgo: 2/4 training: tds_bench (SQL Server path)" >&2
LLVM_PROFILE_FILE="$raw/server-tds-%p-%m.profraw" \
    "$gen/examples/tds_bench" --secs 2 --warmup 0.5 --rounds 1 --conc 1,32 >"$work/tds.log" 2>&1 \
    || { echo "tds_bench failed during training:" >&2; tail -20 "$work/tds.log" >&2; exit 1; }

echo "pgo: 2/4 training: demo (SQLite path)" >&2
port=$(free_port)
LLVM_PROFILE_FILE="$raw/server-demo-%p-%m.profraw" \
    "$gen/mssql-mcp" demo --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/demo.log" 2>&1 &
demo_pid=$!
wait_healthy "$port" "$work/demo.log" || exit 1
for workload in w1 w2 w3; do
    LLVM_PROFILE_FILE="$raw/loadgen-%p.profraw" \
        "$gen/examples/loadgen" "http://127.0.0.1:$port/claude/mcp" --workload "$workload" -c 4 -t 1 -d 3 \
        >"$work/loadgen-$workload.log" 2>&1 \
        || { echo "loadgen $workload failed during training:" >&2; tail -20 "$work/loadgen-$workload.log" >&2; exit 1; }
done
# A clean exit writes the profile.
kill -TERM "$demo_pid"
wait "$demo_pid" || true
demo_pid=""

echo "pgo: 3/4 merging the server profiles" >&2
profile="$work/merged.profdata"
shopt -s nullglob
server_raw=("$raw"/server-*.profraw)
for part in tds demo; do
    written=("$raw"/server-"$part"-*.profraw)
    [ "${#written[@]}" -gt 0 ] \
        || { echo "the $part training wrote no profile (did its process exit cleanly?)" >&2; exit 1; }
done
"$profdata" merge -o "$profile" "${server_raw[@]}"
if [ -n "$profile_out" ]; then
    cp "$profile" "$profile_out"
fi

echo "pgo: 4/4 optimized build (target/pgo)" >&2
CARGO_TARGET_DIR=target/pgo RUSTFLAGS="-Cprofile-use=$profile" \
    cargo build --release --locked "${targets[@]}"
echo "pgo: done: target/pgo/release/mssql-mcp" >&2
