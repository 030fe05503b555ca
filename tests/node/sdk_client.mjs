// End-to-end tests of mssql-mcp with the official MCP TypeScript SDK client.
//
//   node --test-reporter=spec tests/node/sdk_client.mjs http://127.0.0.1:PORT
//   MCP_BASE_URL=http://127.0.0.1:PORT node --test tests/node/sdk_client.mjs
//
// The base URL is the server's root; the scopes `/chatgpt` (search + fetch) and `/claude`
// (all six tools) are tested over Streamable HTTP (`<scope>/mcp`) and over the legacy
// HTTP+SSE transport (`<scope>/sse`). Table names are discovered with `search("list tables")`;
// the assertions are on real content (a word taken from a fetched row finds that row again).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { McpError } from "@modelcontextprotocol/sdk/types.js";

import { SCOPES, baseUrl, transports } from "./sdk_common.mjs";

const BASE = baseUrl("sdk_client.mjs");
const TRANSPORTS = transports(BASE, { StreamableHTTPClientTransport, SSEClientTransport });

// Words that say nothing about a row: column-ish values, booleans, SQL-ish noise.
const BORING = new Set(["null", "true", "false", "none", "table", "rows", "related", "main", "dbo", "example"]);

/** The one text content item of a tool result, parsed as JSON. */
function parsedText(result) {
  assert.ok(Array.isArray(result.content), "result.content is an array");
  const texts = result.content.filter((c) => c.type === "text");
  assert.equal(texts.length, 1, `exactly one text content item (got ${JSON.stringify(result.content).slice(0, 300)})`);
  return JSON.parse(texts[0].text);
}

/** Calls a tool that must succeed; checks structuredContent == parsed text; returns it. */
async function callOk(client, name, args) {
  const result = await client.callTool({ name, arguments: args });
  assert.notEqual(result.isError, true, `${name}(${JSON.stringify(args)}) failed: ${JSON.stringify(result.content)}`);
  const parsed = parsedText(result);
  assert.ok(result.structuredContent, `${name} returns structuredContent`);
  assert.deepEqual(result.structuredContent, parsed, `${name}: structuredContent equals the parsed text content`);
  return parsed;
}

function nonEmptyString(v, what) {
  assert.equal(typeof v, "string", `${what} is a string`);
  assert.ok(v.trim().length > 0, `${what} is non-empty`);
}

/** ChatGPT's search contract: {results: [{id, title, url, text?}]}. */
function checkSearchShape(out) {
  assert.ok(Array.isArray(out.results), "search returns a results array");
  for (const r of out.results) {
    nonEmptyString(r.id, "result.id");
    nonEmptyString(r.title, "result.title");
    nonEmptyString(r.url, "result.url");
    assert.ok(/^https?:\/\//.test(r.url), `result.url is an absolute URL (${r.url})`);
    if (r.text !== undefined) assert.equal(typeof r.text, "string", "result.text is a string");
  }
  const ids = out.results.map((r) => r.id);
  assert.equal(new Set(ids).size, ids.length, "result ids are unique");
}

/** ChatGPT's fetch contract: {id, title, text, url, metadata?}. */
function checkFetchShape(doc, id) {
  nonEmptyString(doc.id, "fetch.id");
  nonEmptyString(doc.title, "fetch.title");
  nonEmptyString(doc.text, "fetch.text");
  nonEmptyString(doc.url, "fetch.url");
  assert.equal(doc.id, id, "fetch returns the id it was asked for");
  if (doc.metadata !== undefined) {
    assert.equal(typeof doc.metadata, "object", "fetch.metadata is an object");
    assert.ok(doc.metadata !== null && !Array.isArray(doc.metadata), "fetch.metadata is a plain object");
  }
}

/** Distinctive words from a fetched row's `column: value` lines, rarest-looking first. */
function candidateWords(text) {
  const words = [];
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Za-z_][\w ]*):\s+(.+)$/.exec(line);
    if (!m) continue;
    const column = m[1].toLowerCase();
    for (const w of m[2].split(/[^\p{L}]+/u)) {
      const lw = w.toLowerCase();
      if (w.length < 4 || BORING.has(lw) || column.includes(lw)) continue;
      if (!words.includes(w)) words.push(w);
    }
  }
  // Capitalised words (names, places, companies) are the likeliest to be rare.
  return words.sort((a, b) => Number(/^\p{Lu}/u.test(b)) - Number(/^\p{Lu}/u.test(a))).slice(0, 8);
}

async function expectToolError(client, name, args) {
  try {
    const result = await client.callTool({ name, arguments: args });
    assert.equal(result.isError, true, `${name}(${JSON.stringify(args)}) must fail, got ${JSON.stringify(result).slice(0, 300)}`);
    assert.ok(result.content?.[0]?.text, "an error result carries a message");
    return { kind: "isError", message: result.content[0].text };
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    assert.ok(e instanceof McpError, `expected an MCP error, got ${e}`);
    return { kind: "rpc", code: e.code, message: e.message };
  }
}

for (const [transportName, makeTransport] of Object.entries(TRANSPORTS)) {
  for (const [scope, expectedTools] of Object.entries(SCOPES)) {
    describe(`${scope} over ${transportName}`, () => {
      /** @type {Client} */
      let client;
      let tables = []; // search("list tables") results
      let table; // the table the row tests use
      let rowId;
      let rowDoc;

      before(async () => {
        client = new Client({ name: "mssql-mcp-sdk-test", version: "1.0.0" });
        await client.connect(makeTransport(scope));
      });

      after(async () => {
        await client?.close();
      });

      test("initialize: server info and capabilities", () => {
        const info = client.getServerVersion();
        nonEmptyString(info?.name, "serverInfo.name");
        nonEmptyString(info?.version, "serverInfo.version");
        const caps = client.getServerCapabilities();
        assert.ok(caps?.tools, "server declares the tools capability");
      });

      test("tools/list offers exactly this scope's tools", async () => {
        const { tools } = await client.listTools();
        assert.deepEqual(tools.map((t) => t.name).sort(), expectedTools);
        for (const t of tools) {
          nonEmptyString(t.description, `${t.name}.description`);
          assert.equal(t.inputSchema?.type, "object", `${t.name}.inputSchema is an object schema`);
          assert.equal(t.annotations?.readOnlyHint, true, `${t.name} is annotated read-only`);
        }
      });

      test("search `list tables` returns the tables", async () => {
        const out = await callOk(client, "search", { query: "list tables" });
        checkSearchShape(out);
        assert.ok(out.results.length >= 2, `expected several tables, got ${out.results.length}`);
        tables = out.results;
        table =
          tables.find((t) => /(^|\.)customers?$/i.test(t.id)) ??
          tables.find((t) => !/ 0 rows/.test(t.text ?? "")) ??
          tables[0];
      });

      test("fetch a table id", async () => {
        assert.ok(table, "a table was found");
        const doc = await callOk(client, "fetch", { id: table.id });
        checkFetchShape(doc, table.id);
        assert.ok(/column/i.test(doc.text), "a table document describes its columns");
      });

      test("search `sample <table>` returns row ids, and fetch a row", async () => {
        assert.ok(table, "a table was found");
        const out = await callOk(client, "search", { query: `sample ${table.id}` });
        checkSearchShape(out);
        assert.ok(out.results.length > 0, `sample ${table.id} returned rows`);
        rowId = out.results[0].id;
        assert.notEqual(rowId, table.id, "a row id differs from its table id");
        rowDoc = await callOk(client, "fetch", { id: rowId });
        checkFetchShape(rowDoc, rowId);
      });

      test("a word from the fetched row finds that row", async () => {
        assert.ok(rowDoc, "a row was fetched");
        const words = candidateWords(rowDoc.text);
        assert.ok(words.length > 0, `no searchable words in ${rowDoc.text.slice(0, 200)}`);
        const tried = [];
        for (const w of words) {
          const out = await callOk(client, "search", { query: w });
          checkSearchShape(out);
          tried.push(`${w}: ${out.results.length} results`);
          if (out.results.some((r) => r.id === rowId)) return;
        }
        assert.fail(`none of the words ${JSON.stringify(words)} found ${rowId} (${tried.join("; ")})`);
      });

      test("a natural-language question gets ChatGPT-shaped results", async () => {
        assert.ok(rowDoc, "a row was fetched");
        const [w1, w2] = candidateWords(rowDoc.text);
        const question = `Which records mention ${w1}${w2 ? ` or ${w2}` : ""}?`;
        const out = await callOk(client, "search", { query: question });
        checkSearchShape(out);
        assert.ok(out.results.length > 0, `"${question}" found nothing`);
        assert.ok(out.results.some((r) => r.id === rowId), `"${question}" should find ${rowId}`);
        // Every result can be fetched.
        for (const r of out.results.slice(0, 3)) {
          const doc = await callOk(client, "fetch", { id: r.id });
          checkFetchShape(doc, r.id);
        }
      });

      test("fetch of an unknown id is an error", async () => {
        const err = await expectToolError(client, "fetch", { id: `${table?.id ?? "main.nosuch"}/999999999` });
        assert.ok(err.message.length > 0);
      });

      test("an unknown tool is an error", async () => {
        const err = await expectToolError(client, "no_such_tool", {});
        assert.match(err.message, /no_such_tool|unknown/i);
      });

      test("resources/list and resources/read", async () => {
        const { resources } = await client.listResources();
        assert.ok(resources.length > 0, "resources are listed");
        for (const r of resources) {
          nonEmptyString(r.uri, "resource.uri");
          nonEmptyString(r.name, "resource.name");
        }
        const first = resources[0];
        const read = await client.readResource({ uri: first.uri });
        assert.ok(read.contents.length > 0, "resource has contents");
        assert.equal(read.contents[0].uri, first.uri);
        assert.equal(typeof read.contents[0].text, "string");
        if ((read.contents[0].mimeType ?? first.mimeType) === "application/json") {
          JSON.parse(read.contents[0].text);
        }
        await assert.rejects(client.readResource({ uri: `${first.uri}-no-such` }), McpError, "an unknown resource is an error");
      });

      test("ping", async () => {
        assert.deepEqual(await client.ping(), {});
      });

      if (scope === "claude") {
        test("list_tables, describe_table, get_table_sample", async () => {
          const listed = await callOk(client, "list_tables", {});
          const listedText = JSON.stringify(listed);
          for (const t of tables) assert.ok(listedText.includes(t.id.split(".").pop()), `list_tables mentions ${t.id}`);
          const described = await callOk(client, "describe_table", { table: table.id });
          assert.ok(JSON.stringify(described).length > 20);
          const sample = await callOk(client, "get_table_sample", { table: table.id, limit: 3 });
          assert.ok(JSON.stringify(sample).length > 20);
        });

        test("execute_sql runs a SELECT and refuses writes", async () => {
          const out = await callOk(client, "execute_sql", { sql: `SELECT COUNT(*) AS n FROM ${table.id}` });
          assert.match(JSON.stringify(out), /"n"/, "the result names the column");
          for (const sql of [`DELETE FROM ${table.id}`, `DROP TABLE ${table.id}`, `SELECT 1; DELETE FROM ${table.id}`]) {
            const err = await expectToolError(client, "execute_sql", { sql });
            assert.ok(err.message.length > 0, `refusal of ${sql} has a message`);
          }
          // Still there afterwards.
          const again = await callOk(client, "execute_sql", { sql: `SELECT COUNT(*) AS n FROM ${table.id}` });
          assert.deepEqual(again.rows ?? again, out.rows ?? out);
        });

        test("a call the client aborts is cancelled on the server, and the session goes on", async () => {
          // The SDK sends notifications/cancelled when its signal aborts; the server stops the
          // query (which would otherwise run to the query timeout) and counts it as cancelled.
          const metric = `mssql_mcp_tool_calls_total{scope="/claude",status="cancelled",tool="execute_sql"}`;
          const cancelledSoFar = async () => {
            const text = await (await fetch(`${BASE}/metrics`)).text();
            const line = text.split("\n").find((l) => l.startsWith(metric + " "));
            return Number(line?.split(" ")[1] ?? 0);
          };
          const before = await cancelledSoFar();
          const controller = new AbortController();
          setTimeout(() => controller.abort(new Error("the user stopped it")), 300);
          const forever = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r";
          await assert.rejects(
            client.callTool({ name: "execute_sql", arguments: { sql: forever } }, undefined, { signal: controller.signal }),
          );
          let now = before;
          for (let i = 0; i < 50 && now === before; i++) {
            await new Promise((r) => setTimeout(r, 100));
            now = await cancelledSoFar();
          }
          assert.equal(now, before + 1, "the server counted the call as cancelled within 5 s");
          assert.deepEqual(await client.ping(), {});
        });
      }

      if (scope === "chatgpt") {
        test("the chatgpt scope hides the demo's denied column employees.salary", async (t) => {
          const employees = tables.find((x) => /(^|\.)employees$/i.test(x.id));
          if (!employees) return t.skip("no employees table in this database");
          const docs = [employees, await callOk(client, "fetch", { id: employees.id })];
          const sample = await callOk(client, "search", { query: `sample ${employees.id}` });
          if (sample.results.length > 0) {
            docs.push(sample.results[0], await callOk(client, "fetch", { id: sample.results[0].id }));
          }
          for (const d of docs) assert.doesNotMatch(JSON.stringify(d), /salary/i, `${d.id} reveals salary on /chatgpt`);
          await expectToolError(client, "search", { query: `SELECT salary FROM ${employees.id}` });
        });
      }
    });
  }
}
