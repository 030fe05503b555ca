#!/usr/bin/env bash
# Node.js side of CI: Node 22 (from the npm registry's node-linux-<arch> package, into
# .ci/node) and the pinned test packages of tests/node (npm ci from its package-lock.json:
# @modelcontextprotocol/conformance, @modelcontextprotocol/sdk, @modelcontextprotocol/inspector).
#
#   . .ci/node.sh      # installs if needed and puts Node 22 first on PATH in this shell
#   bash .ci/node.sh   # installs if needed and prints the versions
#
# Idempotent: a second run with nothing changed does no network work. Needs the machine's
# npm (Node 20's) only to fetch Node 22; everything after runs on Node 22.

ci_node_setup() {
  local root node_version arch pkg prefix bin stamp want
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  node_version="22.23.3"
  case "$(uname -m)" in
    x86_64 | amd64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *)
      echo "node.sh: unsupported machine $(uname -m)" >&2
      return 1
      ;;
  esac
  pkg="node-linux-$arch"
  prefix="$root/.ci/node"
  bin="$prefix/node_modules/$pkg/bin"

  export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

  if ! command -v npm >/dev/null 2>&1; then
    echo "node.sh: no npm on this machine; installing Debian's npm to bootstrap Node 22"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null || return 1
  fi

  if [ "$("$bin/node" --version 2>/dev/null)" != "v$node_version" ]; then
    echo "node.sh: installing Node $node_version ($pkg) into .ci/node"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-save --no-package-lock --loglevel=error \
      "$pkg@$node_version" >/dev/null || return 1
  fi
  case ":$PATH:" in
    *":$bin:"*) ;;
    *) export PATH="$bin:$PATH" ;;
  esac
  if [ "$(node --version)" != "v$node_version" ]; then
    echo "node.sh: node on PATH is $(node --version), expected v$node_version" >&2
    return 1
  fi

  # tests/node: reinstall only when the lockfile or Node changed.
  stamp="$root/tests/node/node_modules/.ci-stamp"
  want="$(sha256sum "$root/tests/node/package-lock.json" | cut -c1-64) node-$node_version"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "node.sh: installing tests/node packages (npm ci)"
    (cd "$root/tests/node" && npm ci --loglevel=error --ignore-scripts >/dev/null) || return 1
    echo "$want" >"$stamp"
  fi

  local v_conf v_sdk v_insp
  v_conf=$(node -p 'require("./tests/node/node_modules/@modelcontextprotocol/conformance/package.json").version' 2>/dev/null || echo "?")
  v_sdk=$(node -p 'require("./tests/node/node_modules/@modelcontextprotocol/sdk/package.json").version' 2>/dev/null || echo "?")
  v_insp=$(node -p 'require("./tests/node/node_modules/@modelcontextprotocol/inspector/package.json").version' 2>/dev/null || echo "?")
  echo "node.sh: node $(node --version), npm $(npm --version), conformance $v_conf, sdk $v_sdk, inspector $v_insp"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  ci_node_setup
else
  pushd "$(dirname "${BASH_SOURCE[0]}")/.." >/dev/null || return 1
  ci_node_setup
  ci_node_status=$?
  popd >/dev/null || true
  return "$ci_node_status"
fi
