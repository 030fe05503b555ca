// mssql-mcp with an older official MCP TypeScript SDK client: @modelcontextprotocol/sdk 1.12.3
// (installed as `sdk-2025-03-26`), whose newest protocol revision is 2025-03-26. Such a client
// refuses to go on when `initialize` answers a revision it does not know ("Server's protocol
// version is not supported"), and clients built on it are still in use. The server must settle
// on 2025-03-26 with it, over Streamable HTTP (`<scope>/mcp`) and over the legacy HTTP+SSE
// transport (`<scope>/sse`), and every result must parse with that SDK's own schemas.
//
//   node --test-reporter=spec tests/node/sdk_2025_03_26.mjs http://127.0.0.1:PORT
//
// Last, a raw JSON-RPC batch (which 2025-03-26 has and later revisions removed) on a session
// this client opened.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Client } from "sdk-2025-03-26/client/index.js";
import { SSEClientTransport } from "sdk-2025-03-26/client/sse.js";
import { StreamableHTTPClientTransport } from "sdk-2025-03-26/client/streamableHttp.js";
import { LATEST_PROTOCOL_VERSION } from "sdk-2025-03-26/types.js";

import { SCOPES, baseUrl, transports } from "./sdk_common.mjs";

const BASE = baseUrl("sdk_2025_03_26.mjs");
const TRANSPORTS = transports(BASE, { StreamableHTTPClientTransport, SSEClientTransport });

test("the installed SDK is the 2025-03-26 one", () => {
  assert.equal(LATEST_PROTOCOL_VERSION, "2025-03-26");
});

/** The one text content of a successful tool result, parsed; 2025-03-26 has no structuredContent. */
async function callOk(client, name, args) {
  const result = await client.callTool({ name, arguments: args });
  assert.notEqual(result.isError, true, `${name} failed: ${JSON.stringify(result.content)}`);
  assert.equal(result.structuredContent, undefined, "no structuredContent in 2025-03-26");
  assert.equal(result.content.length, 1, JSON.stringify(result.content).slice(0, 300));
  assert.equal(result.content[0].type, "text");
  return JSON.parse(result.content[0].text);
}

for (const [transportName, makeTransport] of Object.entries(TRANSPORTS)) {
  for (const [scope, expectedTools] of Object.entries(SCOPES)) {
    describe(`${scope} over ${transportName} with SDK 1.12.3`, () => {
      let client;

      before(async () => {
        client = new Client({ name: "mssql-mcp-sdk-2025-03-26-test", version: "1.0.0" });
        // Throws "Server's protocol version is not supported" unless the server settles on
        // a revision this SDK knows.
        await client.connect(makeTransport(scope));
      });

      after(async () => {
        await client?.close();
      });

      test("tools/list: this scope's tools, without what 2025-03-26 lacks", async () => {
        const { tools } = await client.listTools();
        assert.deepEqual(tools.map((t) => t.name).sort(), expectedTools);
        for (const t of tools) {
          assert.equal(t.title, undefined, `${t.name} has no title`);
          assert.equal(t.outputSchema, undefined, `${t.name} has no outputSchema`);
          assert.equal(t.annotations?.readOnlyHint, true, `${t.name} is annotated read-only`);
        }
      });

      test("search then fetch the first result", async () => {
        const found = await callOk(client, "search", { query: "list tables" });
        assert.ok(Array.isArray(found.results) && found.results.length >= 2, JSON.stringify(found).slice(0, 300));
        const customers = found.results.find((r) => /(^|\.)customers$/.test(r.id)) ?? found.results[0];
        const sample = await callOk(client, "search", { query: `sample ${customers.id}` });
        assert.ok(sample.results.length > 0, "the sample has rows");
        const rowId = sample.results[0].id;
        const doc = await callOk(client, "fetch", { id: rowId });
        assert.equal(doc.id, rowId);
        assert.ok(doc.text.length > 0 && /^https?:\/\//.test(doc.url), JSON.stringify(doc).slice(0, 300));
      });

      if (expectedTools.includes("execute_sql")) {
        test("execute_sql answers, and a write is refused", async () => {
          const out = await callOk(client, "execute_sql", { sql: "SELECT count(*) AS n FROM customers" });
          assert.ok(out.rows[0].n > 0, JSON.stringify(out));
          const refused = await client.callTool({ name: "execute_sql", arguments: { sql: "DELETE FROM customers" } });
          assert.equal(refused.isError, true, JSON.stringify(refused).slice(0, 300));
        });
      }
    });
  }
}

describe("a JSON-RPC batch on a 2025-03-26 session", () => {
  test("is answered in order, in one array", async () => {
    const transport = new StreamableHTTPClientTransport(new URL(`${BASE}/claude/mcp`));
    const client = new Client({ name: "mssql-mcp-batch-test", version: "1.0.0" });
    await client.connect(transport);
    try {
      const sessionId = transport.sessionId;
      assert.ok(sessionId, "the session has an id");
      const res = await fetch(`${BASE}/claude/mcp`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-session-id": sessionId,
        },
        body: JSON.stringify([
          { jsonrpc: "2.0", id: 1, method: "tools/list" },
          { jsonrpc: "2.0", method: "notifications/roots/list_changed" },
          { jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "execute_sql", arguments: { sql: "SELECT count(*) AS n FROM orders" } } },
        ]),
      });
      assert.equal(res.status, 200);
      const answers = await res.json();
      assert.deepEqual(answers.map((a) => a.id), [1, 2]);
      assert.equal(answers[0].result.tools.length, 6);
      assert.ok(JSON.parse(answers[1].result.content[0].text).rows[0].n > 0);
    } finally {
      await client.close();
    }
  });
});
