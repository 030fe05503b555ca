// The official MCP TypeScript SDK client connects to mssql-mcp with its own OAuth support:
// discovery (RFC 9728 → RFC 8414), dynamic registration, PKCE S256, the sign-in form posted by
// this test's provider (acting as the browser and the person), the code exchange, then
// `search` and `fetch` — over Streamable HTTP (`/mcp`) and the legacy HTTP+SSE transport (`/sse`).
//
//   MCP_BASE_URL=http://127.0.0.1:PORT MCP_OAUTH_USER=alice MCP_OAUTH_PASSWORD=… \
//   MCP_SEARCH_WORD=Ada node --test oauth_client.mjs
//
// tests/oauth.rs starts the server and runs this file (when Node 22 and the SDK are installed).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const BASE = (process.env.MCP_BASE_URL ?? "").replace(/\/+$/, "");
const USER = process.env.MCP_OAUTH_USER ?? "";
const PASSWORD = process.env.MCP_OAUTH_PASSWORD ?? "";
const WORD = process.env.MCP_SEARCH_WORD ?? "";
const SCOPES = (process.env.MCP_SCOPES ?? "chatgpt,claude").split(",");
if (!/^https?:\/\//.test(BASE) || !USER || !PASSWORD || !WORD) {
  console.error("set MCP_BASE_URL, MCP_OAUTH_USER, MCP_OAUTH_PASSWORD and MCP_SEARCH_WORD");
  process.exit(2);
}
const REDIRECT = "http://127.0.0.1:9/oauth/callback";

/** An OAuthClientProvider that keeps everything in memory and signs in by posting the form. */
class FormPostingProvider {
  constructor(issuer) {
    this.issuer = issuer;
    this.client = undefined;
    this.saved = undefined;
    this.verifier = undefined;
    this.code = undefined;
    this.pageHtml = "";
  }
  get redirectUrl() {
    return REDIRECT;
  }
  get clientMetadata() {
    return {
      client_name: "SDK OAuth test",
      redirect_uris: [REDIRECT],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  state() {
    return "sdk-state-42";
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info) {
    this.client = info;
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens) {
    this.saved = tokens;
  }
  saveCodeVerifier(v) {
    this.verifier = v;
  }
  codeVerifier() {
    return this.verifier;
  }
  /** The browser's part: load the sign-in page, fill it in, approve, catch the redirect. */
  async redirectToAuthorization(url) {
    assert.equal(url.searchParams.get("code_challenge_method"), "S256");
    const page = await fetch(url, { redirect: "manual" });
    assert.equal(page.status, 200, `sign-in page: ${page.status}`);
    const cookie = page.headers
      .getSetCookie()
      .find((c) => c.startsWith("mcp_authz_"))
      ?.split(";")[0];
    assert.ok(cookie, "the page sets its binding cookie");
    const html = await page.text();
    this.pageHtml = html;
    const field = (name) => html.match(new RegExp(`name="${name}" value="([^"]*)"`))?.[1];
    const action = new URL(html.match(/<form method="post" action="([^"]*)"/)[1], url);
    const form = new URLSearchParams({
      request_id: field("request_id"),
      csrf: field("csrf"),
      username: USER,
      password: PASSWORD,
      action: "approve",
    });
    const res = await fetch(action, {
      method: "POST",
      body: form,
      headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
      redirect: "manual",
    });
    assert.equal(res.status, 303, `approval: ${res.status} ${await res.clone().text()}`);
    const back = new URL(res.headers.get("location"));
    assert.equal(`${back.origin}${back.pathname}`, REDIRECT);
    assert.equal(back.searchParams.get("state"), "sdk-state-42");
    assert.equal(back.searchParams.get("iss"), this.issuer);
    this.code = back.searchParams.get("code");
  }
}

const TRANSPORTS = {
  "streamable-http": (scope, provider) =>
    new StreamableHTTPClientTransport(new URL(`${BASE}/${scope}/mcp`), { authProvider: provider }),
  sse: (scope, provider) => new SSEClientTransport(new URL(`${BASE}/${scope}/sse`), { authProvider: provider }),
};

/** Connects through the whole OAuth flow; returns the connected client and the provider. */
async function connectWithOAuth(scope, kind) {
  const provider = new FormPostingProvider(`${BASE}/${scope}`);
  const first = TRANSPORTS[kind](scope, provider);
  await assert.rejects(new Client({ name: "oauth-test", version: "1.0.0" }).connect(first), UnauthorizedError);
  assert.ok(provider.code, "the provider caught an authorization code");
  await first.finishAuth(provider.code);
  assert.ok(provider.saved?.access_token, "tokens were saved");
  const client = new Client({ name: "oauth-test", version: "1.0.0" });
  await client.connect(TRANSPORTS[kind](scope, provider));
  return { client, provider };
}

function parsed(result) {
  assert.notEqual(result.isError, true, JSON.stringify(result.content));
  const text = result.content.find((c) => c.type === "text");
  return JSON.parse(text.text);
}

for (const scope of SCOPES) {
  for (const kind of Object.keys(TRANSPORTS)) {
    describe(`/${scope} over ${kind}`, () => {
      test("signs in through the SDK's OAuth flow, then search and fetch work", async () => {
        const { client, provider } = await connectWithOAuth(scope, kind);
        try {
          assert.match(provider.pageHtml, /SDK OAuth test/, "the page names the client");
          assert.match(provider.pageHtml, new RegExp(`/${scope}`), "the page names the scope");
          assert.equal(provider.saved.token_type, "Bearer");
          const tools = (await client.listTools()).tools.map((t) => t.name);
          assert.ok(tools.includes("search") && tools.includes("fetch"), tools.join(","));
          const found = parsed(await client.callTool({ name: "search", arguments: { query: WORD } }));
          assert.ok(found.results.length > 0, `search(${WORD}) finds something`);
          const doc = parsed(await client.callTool({ name: "fetch", arguments: { id: found.results[0].id } }));
          assert.equal(doc.id, found.results[0].id);
          assert.match(doc.text, new RegExp(WORD));
        } finally {
          await client.close();
        }
      });
    });
  }
}

test("a client without a token is told where to sign in", async () => {
  const res = await fetch(`${BASE}/${SCOPES[0]}/mcp`, { method: "POST", body: "{}", headers: { "content-type": "application/json" } });
  assert.equal(res.status, 401);
  assert.match(res.headers.get("www-authenticate"), /^Bearer resource_metadata="[^"]+\/\.well-known\/oauth-protected-resource\//);
});
