-- wrk script for the MCP benchmark (see benches/README.md).
--
--   wrk -t2 -c32 -d10s --latency -s benches/mcp.lua http://127.0.0.1:PORT/claude/mcp -- w1
--
-- Workloads (first script argument):
--   w1  execute_sql  SELECT * FROM customers WHERE customer_id = N        (N random 1..5000)
--   w2  execute_sql  SELECT * FROM orders WHERE order_id > N ORDER BY order_id LIMIT 100
--                                                                        (N random 0..14900: always 100 rows)
--   w3  fetch        {"id":"main.customers/N"}                            (N random 1..5000)
--
-- Every request is a stateless MCP 2026-07-28 `tools/call` (no initialize, no session) with a
-- JSON-RPC id unique across threads and connections. The script checks every response: a
-- non-200 status, a body without a JSON-RPC "result", or a tool result with "isError":true
-- counts as an error. done() prints one machine-readable line that benches/run.sh parses:
--
--   BENCH_RESULT requests=… duration_us=… bytes=… rps=… p50_us=… p99_us=… max_us=… non200=… no_result=…
--                is_error=… socket_errors=…

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local PROTOCOL = "2026-07-28"
local META = '"_meta":{"io.modelcontextprotocol/protocolVersion":"' .. PROTOCOL ..
  '","io.modelcontextprotocol/clientCapabilities":{}}'

local workload, tool
local seq = 0
non200 = 0
no_result = 0
is_error = 0
first_bad = ""

function init(args)
  workload = args[1] or "w1"
  if workload == "w1" or workload == "w2" then
    tool = "execute_sql"
  elseif workload == "w3" then
    tool = "fetch"
  else
    error("unknown workload '" .. tostring(workload) .. "' (expected w1, w2 or w3)")
  end
  -- tid is set by setup() before init() runs; seed differently per thread.
  math.randomseed(os.time() * 1000 + tid * 7919)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["MCP-Protocol-Version"] = PROTOCOL
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = tool
end

local function arguments()
  if workload == "w1" then
    return '{"sql":"SELECT * FROM customers WHERE customer_id = ' .. math.random(1, 5000) .. '"}'
  elseif workload == "w2" then
    return '{"sql":"SELECT * FROM orders WHERE order_id > ' .. math.random(0, 14900) ..
      ' ORDER BY order_id LIMIT 100"}'
  else
    return '{"id":"main.customers/' .. math.random(1, 5000) .. '"}'
  end
end

function request()
  seq = seq + 1
  -- unique across threads: thread number in the high digits, per-thread sequence below
  local id = tid * 1000000000 + seq
  local body = '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"' ..
    tool .. '","arguments":' .. arguments() .. ',' .. META .. '}}'
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    if first_bad == "" then first_bad = "HTTP " .. status .. ": " .. string.sub(body or "", 1, 300) end
  elseif not string.find(body, '"result":', 1, true) then
    no_result = no_result + 1
    if first_bad == "" then first_bad = string.sub(body, 1, 300) end
  -- `Error":true` rather than `"isError":true`: a plain find jumps from one occurrence of the
  -- pattern's first byte to the next, and compact JSON has a `"` every few bytes but few `E`s.
  -- On a 100-row result (80 KB) that took wrk 118-127 µs per response instead of 78-83. It
  -- matches everything the longer pattern matches (so it misses no error) and more (a key
  -- ending in `Error` set to true would count as an error, never the reverse).
  elseif string.find(body, 'Error":true', 1, true) then
    is_error = is_error + 1
    if first_bad == "" then first_bad = string.sub(body, 1, 300) end
  end
end

function done(summary, latency, requests)
  local n200, nres, nerr, bad = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    n200 = n200 + t:get("non200")
    nres = nres + t:get("no_result")
    nerr = nerr + t:get("is_error")
    if bad == "" then bad = t:get("first_bad") end
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d bytes=%d rps=%.1f p50_us=%d p99_us=%d max_us=%d " ..
    "non200=%d no_result=%d is_error=%d socket_errors=%d\n",
    summary.requests, summary.duration, summary.bytes, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.max,
    n200, nres, nerr, socket_errors))
  if bad ~= "" then
    io.write("BENCH_FIRST_BAD " .. string.gsub(bad, "\n", " ") .. "\n")
  end
end
