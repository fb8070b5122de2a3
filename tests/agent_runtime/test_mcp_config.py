"""The MCP client config: both file formats, ${VAR} expansion, validation messages, path resolution."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from agent_runtime.config import (
    McpConfig,
    McpConfigError,
    McpServerConfig,
    load_mcp_config,
    parse_mcp_config,
    resolve_mcp_config_path,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "mcp-config.example.json"


def write(tmp_path: Path, data: object, name: str = "mcp.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def load_error(tmp_path: Path, data: object, environ: dict[str, str] | None = None) -> str:
    path = write(tmp_path, data)
    with pytest.raises(McpConfigError) as info:
        load_mcp_config(path, environ=environ or {})
    message = str(info.value)
    assert str(path) in message
    return message


def process(command: str = "srv", **extra: object) -> dict:
    return {"type": "Process", "command": command, **extra}


# --- the mistral.rs format ------------------------------------------------------------------------

def test_mistral_format_parses_every_source_type(tmp_path):
    data = {
        "_comment": "ignored",
        "servers": [
            {"id": "fs", "name": "Files", "_note": "ignored",
             "source": {"type": "Process", "command": "npx", "args": ["-y", "pkg", "/tmp"], "work_dir": "/srv",
                        "env": {"A": "1", "N": 2, "B": True}, "timeout_secs": 5},
             "tool_prefix": "files", "resources": ["file:///tmp/*"]},
            {"id": "web", "name": "Web", "source": {"type": "Http", "url": "https://h.example/mcp",
                                                    "timeout_secs": 2.5, "headers": {"X-Key": "k"}},
             "bearer_token": "tok", "enabled": False},
            {"id": "old", "name": "Old", "source": {"type": "Sse", "url": "http://127.0.0.1:9/sse"}},
            {"id": "sock", "name": "Sock", "source": {"type": "WebSocket", "url": "wss://h.example/ws"}},
        ],
        "auto_register_tools": False,
        "tool_timeout_secs": 12,
        "max_concurrent_calls": 3,
    }
    path = write(tmp_path, data)
    config = load_mcp_config(path, environ={})
    assert config == McpConfig(
        servers=(
            McpServerConfig(id="fs", name="Files", transport="stdio", command="npx", args=("-y", "pkg", "/tmp"),
                            env=(("A", "1"), ("N", "2"), ("B", "true")), cwd="/srv", timeout_s=5.0,
                            tool_prefix="files", resources=("file:///tmp/*",)),
            McpServerConfig(id="web", name="Web", transport="http", url="https://h.example/mcp",
                            headers=(("X-Key", "k"),), bearer_token="tok", timeout_s=2.5, enabled=False),
            McpServerConfig(id="old", name="Old", transport="sse", url="http://127.0.0.1:9/sse"),
            McpServerConfig(id="sock", name="Sock", transport="websocket", url="wss://h.example/ws"),
        ),
        auto_register_tools=False,
        tool_timeout_s=12.0,
        max_concurrent_calls=3,
        source=str(path),
    )


def test_global_settings_default_when_absent():
    config = parse_mcp_config({"servers": []}, "inline")
    assert config == McpConfig(servers=(), auto_register_tools=True, tool_timeout_s=30.0, max_concurrent_calls=10,
                               source="inline")


def test_config_is_frozen():
    config = parse_mcp_config({"servers": [{"name": "a", "source": process()}]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.servers[0].command = "other"  # type: ignore[misc]


def test_default_ids_are_derived_from_names_deterministically():
    data = {"servers": [{"name": "My Files!", "source": process()}, {"name": "Café Søk", "source": process()},
                        {"name": "日本", "source": process()}, {"id": "x", "source": process()}]}
    first = parse_mcp_config(data, environ={})
    second = parse_mcp_config(json.loads(json.dumps(data)), environ={})
    ids = [s.id for s in first.servers]
    assert ids == [s.id for s in second.servers]
    assert ids[:2] == ["my-files", "cafe-sk"]
    assert ids[2].startswith("server-") and len(ids[2]) == len("server-") + 8
    assert ids[3] == "x" and first.servers[3].name == "x"
    assert first.servers[0].name == "My Files!"


def test_disabled_servers_are_kept():
    config = parse_mcp_config({"servers": [{"name": "a", "source": process(), "enabled": False}]})
    assert [(s.id, s.enabled) for s in config.servers] == [("a", False)]
    desktop = parse_mcp_config({"mcpServers": {"b": {"command": "x", "disabled": True}, "c": {"command": "y"}}})
    assert [(s.id, s.enabled) for s in desktop.servers] == [("b", False), ("c", True)]


# --- the Claude Desktop format --------------------------------------------------------------------

def test_desktop_format_parses_and_infers_transports(tmp_path):
    data = {
        "mcpServers": {
            "_comment": "ignored",
            "fs": {"command": "npx", "args": ["-y", "pkg"], "env": {"K": "v"}, "cwd": "/w"},
            "time": {"type": "stdio", "command": "mcp-server-time"},
            "plain": {"url": "https://h.example/mcp", "headers": {"Authorization": "Bearer t"}},
            "legacy": {"url": "http://h.example/sse"},
            "legacy2": {"url": "http://h.example/x/sse/?q=1"},
            "sock": {"url": "ws://h.example/ws"},
            "typed": {"type": "streamable-http", "url": "https://h.example/a"},
            "typed_sse": {"type": "sse", "url": "https://h.example/events"},
            "typed_ws": {"type": "websocket", "url": "wss://h.example/ws"},
            "pre": {"url": "https://h.example/p", "tool_prefix": "p1"},
        },
        "tool_timeout_secs": 7,
        "max_concurrent_calls": 2,
        "auto_register_tools": False,
    }
    path = write(tmp_path, data)
    config = load_mcp_config(path, environ={})
    assert config.servers[:3] == (
        McpServerConfig(id="fs", name="fs", transport="stdio", command="npx", args=("-y", "pkg"),
                        env=(("K", "v"),), cwd="/w"),
        McpServerConfig(id="time", name="time", transport="stdio", command="mcp-server-time"),
        McpServerConfig(id="plain", name="plain", transport="http", url="https://h.example/mcp",
                        headers=(("Authorization", "Bearer t"),)),
    )
    transports = {s.id: s.transport for s in config.servers}
    assert transports == {"fs": "stdio", "time": "stdio", "plain": "http", "legacy": "sse", "legacy2": "sse",
                          "sock": "websocket", "typed": "http", "typed_sse": "sse", "typed_ws": "websocket",
                          "pre": "http"}
    assert config.servers[-1].tool_prefix == "p1"
    assert (config.tool_timeout_s, config.max_concurrent_calls, config.auto_register_tools) == (7.0, 2, False)
    assert config.source == str(path)


# --- ${VAR} expansion -----------------------------------------------------------------------------

def test_env_expansion_with_defaults_and_literal_dollars():
    environ = {"HOST": "h.example", "TOKEN": "s3cret", "EMPTY": "", "DIR": "/data"}
    data = {"servers": [
        {"id": "a", "source": {"type": "Process", "command": "${NOT_EXPANDED}",
                               "args": ["--dir=${DIR}", "${MISSING:-fallback}", "cost $$5", "$HOME", "${EMPTY:-d}"],
                               "work_dir": "${DIR}/w", "env": {"T": "${TOKEN}", "E": "${EMPTY}"}}},
        {"id": "b", "source": {"type": "Http", "url": "https://${HOST}/mcp", "headers": {"X": "k=${TOKEN}"}},
         "bearer_token": "${TOKEN}"},
        {"id": "c", "source": {"type": "Http", "url": "https://h.example"}, "bearer_token": "${NONE:-}"},
    ]}
    a, b, c = parse_mcp_config(data, environ=environ).servers
    assert a.command == "${NOT_EXPANDED}"
    assert a.args == ("--dir=/data", "fallback", "cost $5", "$HOME", "d")
    assert a.cwd == "/data/w"
    assert a.env == (("T", "s3cret"), ("E", ""))
    assert (b.url, b.headers, b.bearer_token) == ("https://h.example/mcp", (("X", "k=s3cret"),), "s3cret")
    assert c.bearer_token is None


def test_env_expansion_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("MCP_TEST_TOKEN", "from-env")
    config = parse_mcp_config({"mcpServers": {"s": {"command": "x", "env": {"T": "${MCP_TEST_TOKEN}"}}}})
    assert config.servers[0].env == (("T", "from-env"),)


def test_keys_are_not_expanded():
    config = parse_mcp_config({"mcpServers": {"s": {"command": "x", "env": {"${K}": "v"}}}}, environ={"K": "no"})
    assert config.servers[0].env == (("${K}", "v"),)


@pytest.mark.parametrize(("source", "field", "expected"), [
    ({"type": "Process", "command": "x", "env": {"KEY": "${API_KEY}"}}, "source.env.KEY", "'API_KEY' is not set"),
    ({"type": "Process", "command": "x", "args": ["a", "${NOPE}"]}, "source.args[1]", "'NOPE' is not set"),
    ({"type": "Http", "url": "https://${HOST}/x"}, "source.url", "'HOST' is not set"),
    ({"type": "Http", "url": "https://h/x", "headers": {"X-A": "${H}"}}, "source.headers.X-A", "'H' is not set"),
    ({"type": "Process", "command": "x", "work_dir": "${1BAD}"}, "source.work_dir", "malformed '${1BAD}'"),
    ({"type": "Process", "command": "x", "args": ["${OPEN"]}, "source.args[0]", "malformed '${'"),
])
def test_expansion_errors_name_variable_server_and_field(tmp_path, source, field, expected):
    message = load_error(tmp_path, {"servers": [{"name": "x", "source": process()},
                                                {"id": "fs", "source": source}]})
    assert "server 'fs' (servers[1])" in message
    assert f"{field}: " in message
    assert expected in message


def test_missing_bearer_token_variable_is_an_error(tmp_path):
    message = load_error(tmp_path, {"servers": [{"id": "w", "source": {"type": "Http", "url": "https://h"},
                                                 "bearer_token": "${MY_TOKEN}"}]})
    assert "server 'w' (servers[0]): bearer_token: environment variable 'MY_TOKEN' is not set" in message


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("server", "field", "expected"), [
    ({"id": "fs", "source": process(""), "tool_prefix": "t"}, "source.command", "must be a non-empty string"),
    ({"id": "fs", "source": process("   ")}, "source.command", "must be a non-empty string"),
    ({"id": "fs", "source": {"type": "Process"}}, "source.command", "missing"),
    ({"id": "fs", "source": process(7)}, "source.command", "got 7"),
    ({"id": "fs", "source": process(args="-y")}, "source.args", "must be a list of strings"),
    ({"id": "fs", "source": process(args=["-y", 3])}, "source.args[1]", "must be a string, got 3"),
    ({"id": "fs", "source": process(env=["A=1"])}, "source.env", "expected an object"),
    ({"id": "fs", "source": process(env={"A": None})}, "source.env.A", "must be a string, number or boolean"),
    ({"id": "fs", "source": process(env={"A=B": "1"})}, "source.env.A=B", "not a valid environment variable"),
    ({"id": "fs", "source": process(comand="x")}, "source.comand", "did you mean 'command'?"),
    ({"id": "fs", "source": process(url="https://h")}, "source.url", "does not apply to Process sources"),
    ({"id": "fs", "source": process(), "enabeld": True}, "enabeld", "did you mean 'enabled'?"),
    ({"id": "fs", "source": process(), "enabled": "yes"}, "enabled", 'must be true or false, got "yes"'),
    ({"id": "fs", "source": {"type": "Stdio", "command": "x"}}, "source.type", "unknown source type \"Stdio\""),
    ({"id": "fs"}, "source", "missing"),
    ({"id": "fs", "source": "npx"}, "source", "expected an object"),
    ({"id": "fs", "source": {"type": "Http", "url": "ftp://h/x"}}, "source.url", "is not a http:// or https:// URL"),
    ({"id": "fs", "source": {"type": "Http", "url": "https://"}}, "source.url", "is not a http:// or https:// URL"),
    ({"id": "fs", "source": {"type": "Sse", "url": "ws://h/x"}}, "source.url", "is not a http:// or https://"),
    ({"id": "fs", "source": {"type": "WebSocket", "url": "https://h"}}, "source.url", "is not a ws:// or wss://"),
    ({"id": "fs", "source": {"type": "Http"}}, "source.url", "missing"),
    ({"id": "fs", "source": {"type": "Http", "url": "https://h", "headers": {"X": 1}}}, "source.headers.X",
     "must be a string, got 1"),
    ({"id": "fs", "source": {"type": "Http", "url": "https://h", "headers": {"Bad Name": "v"}}},
     "source.headers.Bad Name", "not a valid HTTP header name"),
    ({"id": "fs", "source": {"type": "Http", "url": "https://h", "headers": {"X": "a\nb"}}}, "source.headers.X",
     "line breaks"),
    ({"id": "fs", "source": {"type": "Http", "url": "https://h", "timeout_secs": 0}}, "source.timeout_secs",
     "must be a number of seconds > 0, got 0"),
    ({"id": "fs", "source": {"type": "Http", "url": "https://h", "timeout_secs": -1}}, "source.timeout_secs", "> 0"),
    ({"id": "fs", "source": {"type": "Http", "url": "https://h", "timeout_secs": "5"}}, "source.timeout_secs", "> 0"),
    ({"id": "fs", "source": process(), "tool_prefix": "has space"}, "tool_prefix", "must match"),
    ({"id": "fs", "source": process(), "tool_prefix": "x" * 33}, "tool_prefix", "must match"),
    ({"id": "fs", "source": process(), "tool_prefix": ""}, "tool_prefix", "must be a non-empty string"),
    ({"id": "fs", "source": process(), "resources": "file:///x"}, "resources", "must be a list of strings"),
    ({"id": "fs", "source": process(), "bearer_token": "t"}, "bearer_token", "only applies to http"),
    ({"id": "fs", "source": {"type": "Http", "url": "https://h", "headers": {"authorization": "Bearer a"}},
      "bearer_token": "b"}, "bearer_token", "not both"),
    ({"id": "fs", "name": 5, "source": process()}, "name", "must be a non-empty string, got 5"),
])
def test_server_errors_name_file_server_and_field(tmp_path, server, field, expected):
    message = load_error(tmp_path, {"servers": [{"name": "first", "source": process()}, server]})
    assert "server 'fs' (servers[1])" in message
    assert f": {field}: " in message
    assert expected in message


def test_id_that_cannot_be_a_tool_prefix_needs_an_explicit_one(tmp_path):
    message = load_error(tmp_path, {"mcpServers": {"Google Drive": {"command": "x"}}})
    assert "server 'Google Drive' (mcpServers[0]): tool_prefix: missing" in message
    config = parse_mcp_config({"mcpServers": {"Google Drive": {"command": "x", "tool_prefix": "gdrive"}}})
    assert (config.servers[0].id, config.servers[0].tool_prefix) == ("Google Drive", "gdrive")


def test_server_without_name_or_id(tmp_path):
    message = load_error(tmp_path, {"servers": [{"source": process()}]})
    assert "server servers[0]: name: missing" in message


def test_server_that_is_not_an_object(tmp_path):
    message = load_error(tmp_path, {"servers": [["npx"]]})
    assert "server servers[0]: expected an object, got a list" in message


def test_duplicate_ids(tmp_path):
    message = load_error(tmp_path, {"servers": [{"id": "fs", "source": process()}, {"id": "fs", "source": process()}]})
    assert "server 'fs' (servers[1]): id: 'fs' is already the id of servers[0]" in message
    derived = load_error(tmp_path, {"servers": [{"name": "My FS", "source": process()},
                                                {"name": "my-fs", "source": process()}]})
    assert "server 'my-fs' (servers[1]): id:" in derived and "set a distinct 'id'" in derived


def test_duplicate_tool_prefixes(tmp_path):
    message = load_error(tmp_path, {"servers": [{"id": "a", "source": process(), "tool_prefix": "t"},
                                                {"id": "b", "source": process(), "tool_prefix": "t"}]})
    assert "server 'b' (servers[1]): tool_prefix: tool prefix 't' is already used by server 'a' (servers[0])" in message
    # An explicit prefix equal to another server's id (its default prefix) collides too.
    clash = load_error(tmp_path, {"servers": [{"id": "a", "source": process()},
                                              {"id": "b", "source": process(), "tool_prefix": "a"}]})
    assert "server 'b' (servers[1]): tool_prefix: tool prefix 'a' is already used by server 'a'" in clash


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("tool_timeout_secs", 0, "tool_timeout_secs: must be a number of seconds > 0, got 0"),
    ("tool_timeout_secs", True, "tool_timeout_secs: must be a number of seconds > 0, got true"),
    ("max_concurrent_calls", 0, "max_concurrent_calls: must be an integer >= 1, got 0"),
    ("max_concurrent_calls", 2.5, "max_concurrent_calls: must be an integer >= 1, got 2.5"),
    ("auto_register_tools", 1, "auto_register_tools: must be true or false, got 1"),
    ("tool_timeout", 5, "tool_timeout: unknown key (did you mean 'tool_timeout_secs'?"),
])
def test_global_setting_errors(tmp_path, key, value, expected):
    for servers in ({"servers": []}, {"mcpServers": {}}):
        assert expected in load_error(tmp_path, {**servers, key: value})


@pytest.mark.parametrize(("entry", "field", "expected"), [
    ({"command": ""}, "command", "must be a non-empty string"),
    ({}, "command", "needs a 'command' (stdio) or a 'url'"),
    ({"command": "x", "url": "https://h"}, "url", "not both"),
    ({"command": "x", "headers": {}}, "headers", "does not apply to stdio servers"),
    ({"url": "https://h", "env": {}}, "env", "does not apply to http servers"),
    ({"url": "https://h", "type": "grpc"}, "type", 'unknown type "grpc"'),
    ({"type": "http", "url": "ws://h"}, "url", "is not a http:// or https:// URL"),
    ({"type": "websocket", "url": "https://h"}, "url", "is not a ws:// or wss:// URL"),
    ({"url": "h.example/mcp"}, "url", "is not a http:// or https:// URL"),
    ({"type": "stdio", "url": "https://h"}, "url", "does not apply to stdio servers"),
    ({"type": "stdio", "args": []}, "command", "missing"),
    ({"command": "x", "disabled": "no"}, "disabled", "must be true or false"),
    ({"command": "x", "env": {"K": "${SECRET}"}}, "env.K", "'SECRET' is not set"),
    ({"command": "x", "arg": []}, "arg", "did you mean 'args'?"),
])
def test_desktop_errors_name_file_server_and_field(tmp_path, entry, field, expected):
    message = load_error(tmp_path, {"mcpServers": {"ok": {"command": "x"}, "fs": entry}})
    assert "server 'fs' (mcpServers[1])" in message
    assert f": {field}: " in message
    assert expected in message


@pytest.mark.parametrize(("data", "expected"), [
    ([], "expected a JSON object at the top level, got a list"),
    ({}, "expected a 'servers' list (mistral.rs format) or an 'mcpServers' object"),
    ({"servers": [], "mcpServers": {}}, "mixes the mistral.rs format"),
    ({"servers": {"fs": {}}}, "servers: expected a list of servers, got an object (a name -> server object is"),
    ({"mcpServers": []}, "mcpServers: expected an object, got a list"),
    ({"mcpServers": {"": {"command": "x"}}}, "mcpServers: mcpServers[0] has an empty name"),
])
def test_file_shape_errors(tmp_path, data, expected):
    assert expected in load_error(tmp_path, data)


def test_invalid_json_reports_line_and_column(tmp_path):
    message = load_error(tmp_path, '{\n  "servers": [\n    {"id": "a",}\n  ]\n}')
    assert "invalid JSON at line 3, column 16" in message


def test_repeated_json_keys_are_rejected(tmp_path):
    message = load_error(tmp_path, '{"mcpServers": {"fs": {"command": "a"}, "fs": {"command": "b"}}}')
    assert "key 'fs' appears twice" in message


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(McpConfigError, match=re.escape(f"mcp config {path}: file not found")):
        load_mcp_config(path)
    with pytest.raises(McpConfigError, match="is a directory"):
        load_mcp_config(tmp_path)


def test_errors_are_value_errors():
    assert issubclass(McpConfigError, ValueError)


# --- the example file and path resolution ---------------------------------------------------------

def test_example_file_loads():
    config = load_mcp_config(EXAMPLE, environ={})
    by_id = {s.id: s for s in config.servers}
    assert set(by_id) == {"filesystem", "time", "remote", "ws-tools"}
    fs = by_id["filesystem"]
    assert (fs.transport, fs.command, fs.args) == ("stdio", "npx", ("-y", "@modelcontextprotocol/server-filesystem",
                                                                    "/tmp"))
    time = by_id["time"]
    assert (time.transport, time.command, time.args, time.enabled) == (
        "stdio", "mcp-server-time", ("--local-timezone", "UTC"), True)
    remote = by_id["remote"]
    assert (remote.transport, remote.enabled, remote.bearer_token) == ("http", False, None)
    assert remote.headers
    assert (by_id["ws-tools"].transport, by_id["ws-tools"].enabled) == ("websocket", False)
    assert load_mcp_config(EXAMPLE, environ={"MY_TOKEN": "abc"}).servers[2].bearer_token == "abc"


def test_resolve_path_prefers_cli_then_environment():
    env = {"MCP_CONFIG_PATH": "/env.json"}
    assert resolve_mcp_config_path("/cli.json", env) == "/cli.json"
    assert resolve_mcp_config_path(None, env) == "/env.json"
    assert resolve_mcp_config_path(None, {"MCP_CONFIG_PATH": ""}) is None
    assert resolve_mcp_config_path(None, {}) is None


def test_resolve_path_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("MCP_CONFIG_PATH", "/from/env.json")
    assert resolve_mcp_config_path(None) == "/from/env.json"
