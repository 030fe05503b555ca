// Runs the MCP conformance suite's authorization-server scenarios
// (`@modelcontextprotocol/conformance` 0.2.0-alpha `authorization`) against one scope's issuer,
// playing the person at the sign-in page: the suite prints an authorization URL and waits for
// its callback; this script loads the page, signs in, approves and delivers the redirect.
//
//   node oauth_conformance.mjs <conformance-bin-or-dist/index.js> <issuer> <username> <password>
//
// Prints the suite's output and ends with `N passed, M failed`; exits non-zero on a failure.

import { spawn } from "node:child_process";
import net from "node:net";

const [bin, issuer, user, password] = process.argv.slice(2);
if (!bin || !issuer || !user || !password) {
  console.error("usage: node oauth_conformance.mjs <conformance-bin> <issuer> <username> <password>");
  process.exit(2);
}

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

const port = await freePort();
const redirect = `http://127.0.0.1:${port}/callback`;
const reg = await fetch(`${issuer}/register`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ client_name: "MCP conformance suite", redirect_uris: [redirect], token_endpoint_auth_method: "none" }),
});
if (reg.status !== 201) throw new Error(`registration failed: ${reg.status} ${await reg.text()}`);
const { client_id } = await reg.json();

async function signIn(url) {
  const page = await fetch(url, { redirect: "manual" });
  if (page.status !== 200) throw new Error(`sign-in page: ${page.status} ${await page.text()}`);
  const cookie = page.headers.getSetCookie().find((c) => c.startsWith("mcp_authz_"))?.split(";")[0];
  const html = await page.text();
  const field = (name) => html.match(new RegExp(`name="${name}" value="([^"]*)"`))?.[1];
  const action = new URL(html.match(/<form method="post" action="([^"]*)"/)[1], url);
  const res = await fetch(action, {
    method: "POST",
    headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ request_id: field("request_id"), csrf: field("csrf"), username: user, password, action: "approve" }),
    redirect: "manual",
  });
  if (res.status !== 303) throw new Error(`approval: ${res.status} ${await res.text()}`);
  // Deliver the redirect to the suite's callback server, as the browser would.
  await fetch(res.headers.get("location"));
}

// A .js entry point (e.g. node_modules/conformance-auth/dist/index.js) runs under this node.
const [cmd, pre] = bin.endsWith(".js") ? [process.execPath, [bin]] : [bin, []];
const child = spawn(
  cmd,
  [...pre, "authorization", "--url", issuer, "--client-id", client_id, "--resource", `${issuer}/mcp`, "--port", String(port)],
  { stdio: ["ignore", "pipe", "inherit"] },
);
let out = "";
let signing = null;
child.stdout.on("data", (chunk) => {
  process.stdout.write(chunk);
  out += chunk.toString();
  const m = out.match(/^(https?:\/\/\S+\/authorize\?\S+)$/m);
  if (m && !signing) {
    signing = signIn(m[1]).catch((e) => {
      console.error(`sign-in failed: ${e.message}`);
      child.kill();
    });
  }
});
const code = await new Promise((resolve) => child.on("close", resolve));
await signing;
const clean = out.replace(/\x1b\[[0-9;]*m/g, "");
const total = clean.match(/Total:\s*(\d+) passed, (\d+) failed/);
console.log(total ? `${total[1]} passed, ${total[2]} failed` : `0 passed, 1 failed`);
process.exit(code === 0 ? 0 : 1);
