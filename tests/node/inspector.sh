#!/usr/bin/env bash
# Smoke test with the MCP Inspector CLI (@modelcontextprotocol/inspector) against a running
# mssql-mcp.
#
#   tests/node/inspector.sh http://127.0.0.1:PORT
#
# Needs Node >= 22 on PATH and tests/node/node_modules (source .ci/node.sh first).
# Last line: `inspector: N passed, M failed`.
set -uo pipefail

base="${1:?usage: inspector.sh <base-url>}"
base="${base%/}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/mssql-mcp-inspector.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$here"

# The inspector keeps a catalog and storage under $HOME: keep them out of the real one.
export HOME="$work/home" MCP_CATALOG_PATH="$work/home/mcp.json" npm_config_update_notifier=false
mkdir -p "$HOME"

passed=0
failed=0

inspector() {
  timeout 60 npx --no -- mcp-inspector --cli "$@" </dev/null
}

# check NAME JS-ASSERTION -- INSPECTOR-ARGS...: runs the inspector, which must exit 0, and
# evaluates JS-ASSERTION with `out` bound to its parsed JSON output.
check() {
  local name="$1" assertion="$2"
  shift 3
  if inspector "$@" >"$work/out.json" 2>"$work/err.txt" &&
    node -e '
      const fs = require("node:fs");
      const out = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
      const ok = eval(process.argv[2]);
      if (!ok) { console.error("assertion failed: " + process.argv[2]); process.exit(1); }
    ' "$work/out.json" "$assertion" 2>>"$work/err.txt"; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    sed 's/^/     /' "$work/err.txt" | tail -n 20
    head -c 1500 "$work/out.json" | sed 's/^/     /'
    echo
    failed=$((failed + 1))
  fi
}

# check_fails NAME EXPECTED-TEXT -- INSPECTOR-ARGS...: the inspector must exit non-zero and
# print EXPECTED-TEXT (a refusal the user should see).
check_fails() {
  local name="$1" expected="$2"
  shift 3
  if inspector "$@" >"$work/out.json" 2>&1; then
    echo "FAIL $name (exit 0, expected an error)"
    head -c 1500 "$work/out.json" | sed 's/^/     /'
    echo
    failed=$((failed + 1))
  elif grep -q -- "$expected" "$work/out.json"; then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name (no \`$expected\` in the output)"
    head -c 1500 "$work/out.json" | sed 's/^/     /'
    echo
    failed=$((failed + 1))
  fi
}

names='out.tools.map(t => t.name).sort().join(",")'

check "tools/list /claude over http: the six tools" \
  "$names === 'describe_table,execute_sql,fetch,get_table_sample,list_tables,search'" -- \
  "$base/claude/mcp" --transport http --method tools/list
check "tools/list /chatgpt over http: exactly search and fetch" \
  "$names === 'fetch,search'" -- \
  "$base/chatgpt/mcp" --transport http --method tools/list
check "tools/list /chatgpt over legacy sse: exactly search and fetch" \
  "$names === 'fetch,search'" -- \
  "$base/chatgpt/sse" --transport sse --method tools/list
check "tools/list --strict /claude: tool schemas are portable" \
  "out.tools.length === 6" -- \
  "$base/claude/mcp" --transport http --method tools/list --strict

search_ok='!out.isError && JSON.parse(out.content[0].text).results.length > 0 &&
  JSON.parse(out.content[0].text).results.every(r => r.id && r.title && r.url)'
check "tools/call search 'list tables' on /chatgpt over http" "$search_ok" -- \
  "$base/chatgpt/mcp" --transport http --method tools/call --tool-name search --tool-arg "query=list tables"
check "tools/call search 'list tables' on /claude over sse" "$search_ok" -- \
  "$base/claude/sse" --transport sse --method tools/call --tool-name search --tool-arg "query=list tables"

# A table id from the listing, then fetch it.
if inspector "$base/chatgpt/mcp" --transport http --method tools/call --tool-name search \
  --tool-arg "query=list tables" >"$work/tables.json" 2>/dev/null; then
  table_id=$(node -e 'const o=require(process.argv[1]); console.log(JSON.parse(o.content[0].text).results[0].id)' "$work/tables.json")
else
  table_id=no-table-found
fi
check "tools/call fetch '$table_id' on /chatgpt" \
  "!out.isError && JSON.parse(out.content[0].text).id === '$table_id' && JSON.parse(out.content[0].text).text.length > 0" -- \
  "$base/chatgpt/mcp" --transport http --method tools/call --tool-name fetch --tool-arg "id=$table_id"
check "resources/list /claude" "out.resources.length > 0 && out.resources.every(r => r.uri && r.name)" -- \
  "$base/claude/mcp" --transport http --method resources/list
check "prompts/list /claude" "Array.isArray(out.prompts)" -- \
  "$base/claude/mcp" --transport http --method prompts/list

check_fails "tools/call execute_sql DELETE is refused" "isError" -- \
  "$base/claude/mcp" --transport http --method tools/call --tool-name execute_sql \
  --tool-arg "sql=DELETE FROM $table_id"
check_fails "tools/call of an unknown tool is an error" "no_such_tool" -- \
  "$base/claude/mcp" --transport http --method tools/call --tool-name no_such_tool

echo "inspector: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
