#!/usr/bin/env bash
# MCP conformance suite (@modelcontextprotocol/conformance) against a running mssql-mcp.
#
#   tests/node/conformance.sh http://127.0.0.1:PORT
#
# Runs `conformance server` on <base>/claude/mcp for spec versions 2025-06-18 and
# 2025-11-25 with the expected-failures baseline (fixture scenarios only, see the file).
# Needs Node >= 22 on PATH and tests/node/node_modules (source .ci/node.sh first).
# Counts scenarios: one that passes, or fails and is in the baseline, passes; an unexpected
# failure or a stale baseline entry fails. Last line: `conformance: N passed, M failed`.
set -uo pipefail

base="${1:?usage: conformance.sh <base-url>}"
base="${base%/}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
url="$base/claude/mcp"
out="$(mktemp -d "${TMPDIR:-/tmp}/mssql-mcp-conformance.XXXXXX")"
trap 'rm -rf "$out"' EXIT
cd "$here"

passed=0
failed=0

# The fixture scenarios in the baseline must fail for the right reason (see the baseline).
if node conformance_helper.mjs guard "$url"; then
  passed=$((passed + 1))
else
  echo "conformance: the fixture guard failed: fixture scenarios could pass falsely"
  failed=$((failed + 1))
fi

for spec in 2025-06-18 2025-11-25; do
  log="$out/$spec.log"
  echo "--- conformance server --spec-version $spec ($url)"
  npx --no -- conformance server --url "$url" --spec-version "$spec" \
    --expected-failures "$here/conformance-baseline.yml" -o "$out/$spec" >"$log" 2>&1
  rc=$?
  # Strip colours; keep the summary and the baseline verdict.
  sed -e 's/\x1b\[[0-9;]*m//g' "$log" >"$log.txt"
  sed -n '/^=== SUMMARY ===/,$p' "$log.txt"
  total=$(grep -cE '^[✓✗] [a-z0-9-]+: ' "$log.txt" || true)
  unexpected=$(sed -n '/^Unexpected failures (not in baseline)/,/^$/p' "$log.txt" | grep -E '^  ✗ ' | sed 's/^  ✗ //' || true)
  stale=$(sed -n '/^Stale baseline entries/,/^$/p' "$log.txt" | grep -E '^  ✓ ' | sed 's/^  ✓ //' || true)
  n_bad=$(printf '%s\n%s\n' "$unexpected" "$stale" | grep -c . || true)
  if [ "$total" -eq 0 ]; then
    echo "conformance $spec: no scenario ran (exit $rc):"
    tail -n 30 "$log.txt"
    failed=$((failed + 1))
    continue
  fi
  if [ "$rc" -ne 0 ] && [ "$n_bad" -eq 0 ]; then
    echo "conformance $spec: exit $rc with no unexpected failure listed:"
    tail -n 30 "$log.txt"
    n_bad=1
  fi
  if [ -n "$unexpected" ]; then
    echo "conformance $spec: failing checks of unexpected failures:"
    # shellcheck disable=SC2086
    node conformance_helper.mjs report "$out/$spec" $unexpected
  fi
  if [ -n "$stale" ]; then
    echo "conformance $spec: stale baseline entries (now passing, remove them from conformance-baseline.yml):"
    echo "$stale" | sed 's/^/  /'
  fi
  passed=$((passed + total - n_bad))
  failed=$((failed + n_bad))
  echo "conformance $spec: $((total - n_bad)) scenarios ok, $n_bad not ok (exit $rc)"
done

echo "conformance: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
