// Helpers for conformance.sh.
//
//   node conformance_helper.mjs guard <mcp-url>
//     The baseline lists fixture scenarios (test_simple_text, ...). `tools-call-simple-text`
//     passes for ANY result that has a text item, and `tools-call-error` for ANY
//     `isError: true` result, so they would pass falsely if the server answered an unknown
//     tool with a result instead of a JSON-RPC error. This asserts it does not.
//
//   node conformance_helper.mjs report <output-dir> [scenario ...]
//     Prints the FAILURE and WARNING checks (id, message, details) the suite saved with -o,
//     for the named scenarios (all when none are named).

import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";

const [mode, arg] = process.argv.slice(2);

if (mode === "guard") {
  const client = new Client({ name: "conformance-guard", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(arg)));
  let bad = 0;
  for (const name of ["test_simple_text", "test_error_handling"]) {
    try {
      const result = await client.callTool({ name, arguments: {} });
      console.log(`guard: FAILURE ${name}: the server returned a result instead of a JSON-RPC error: ${JSON.stringify(result).slice(0, 300)}`);
      bad++;
    } catch (e) {
      if (e instanceof McpError) {
        console.log(`guard: ok ${name} -> JSON-RPC error ${e.code} (${e.message.slice(0, 80)})`);
      } else {
        console.log(`guard: FAILURE ${name}: ${e}`);
        bad++;
      }
    }
  }
  await client.close();
  process.exit(bad ? 1 : 0);
} else if (mode === "report") {
  const wanted = process.argv.slice(4);
  const scenarioOf = (d) => d.replace(/^server-/, "").replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, "");
  const dirs = readdirSync(arg)
    .filter((d) => wanted.length === 0 || wanted.includes(scenarioOf(d)))
    .map((d) => join(arg, d))
    .filter((d) => statSync(d).isDirectory())
    .sort();
  for (const dir of dirs) {
    let checks;
    try {
      checks = JSON.parse(readFileSync(join(dir, "checks.json"), "utf8"));
    } catch {
      continue;
    }
    for (const c of checks) {
      if (c.status !== "FAILURE" && c.status !== "WARNING") continue;
      const details = c.details ? ` details=${JSON.stringify(c.details).slice(0, 400)}` : "";
      console.log(`  [${scenarioOf(dir.split("/").pop())}] ${c.status} ${c.id}: ${c.errorMessage ?? c.description ?? ""}${details}`);
    }
  }
} else {
  console.error("usage: node conformance_helper.mjs guard <mcp-url> | report <output-dir>");
  process.exit(2);
}
