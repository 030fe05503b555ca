// What the two SDK client suites (sdk_client.mjs, the current SDK; sdk_2025_03_26.mjs, SDK
// 1.12.3) share: the server's base URL, the tools each scope offers, and a transport per kind.

/** The base URL from the first argument or MCP_BASE_URL, without a trailing slash; exits 2 with
 * the usage of `script` when there is none. */
export function baseUrl(script) {
  const base = (process.argv[2] ?? process.env.MCP_BASE_URL ?? "").replace(/\/+$/, "");
  if (!/^https?:\/\//.test(base)) {
    console.error(`usage: node ${script} <base-url>   (or set MCP_BASE_URL), e.g. http://127.0.0.1:8080`);
    process.exit(2);
  }
  return base;
}

/** The tools each scope of the demo offers, sorted. */
export const SCOPES = {
  chatgpt: ["fetch", "search"],
  claude: ["describe_table", "execute_sql", "fetch", "get_table_sample", "list_tables", "search"],
};

/** A transport for a scope, per kind, built with the given SDK's transport classes. */
export function transports(base, { StreamableHTTPClientTransport, SSEClientTransport }) {
  return {
    "streamable-http": (scope) => new StreamableHTTPClientTransport(new URL(`${base}/${scope}/mcp`)),
    sse: (scope) => new SSEClientTransport(new URL(`${base}/${scope}/sse`)),
  };
}
