"""The MCP client config: which MCP servers to connect to, read once from a JSON file and validated.

Two file shapes are accepted (a file may not mix them):
- mistral.rs: ``{"servers": [{"id", "name", "source": {"type": "Process" | "Http" | "Sse" | "WebSocket", ...}}]}``
- Claude Desktop / Cursor / VS Code: ``{"mcpServers": {"name": {"command", ...} | {"url", ...}}}``
Keys starting with ``_`` are comments and ignored everywhere. ``${VAR}``, ``${VAR:-default}`` and ``$$`` are
expanded in args, env values, cwd, url, header values and bearer_token.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NoReturn
from urllib.parse import urlsplit

Transport = Literal["stdio", "http", "sse", "websocket"]

MCP_CONFIG_ENV = "MCP_CONFIG_PATH"
TOOL_PREFIX_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
DEFAULT_TOOL_TIMEOUT_S = 30.0
DEFAULT_MAX_CONCURRENT_CALLS = 10

_TOOL_PREFIX = re.compile(TOOL_PREFIX_PATTERN)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_EXPANSION = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)

_GLOBAL_KEYS = frozenset({"auto_register_tools", "tool_timeout_secs", "max_concurrent_calls"})
_MISTRAL_SERVER_KEYS = frozenset({"id", "name", "source", "enabled", "tool_prefix", "resources", "bearer_token"})
_REMOTE_SOURCE_KEYS = frozenset({"type", "url", "timeout_secs", "headers"})
_SOURCE_KEYS = {
    "Process": frozenset({"type", "command", "args", "work_dir", "env", "timeout_secs"}),
    "Http": _REMOTE_SOURCE_KEYS,
    "Sse": _REMOTE_SOURCE_KEYS,
    "WebSocket": _REMOTE_SOURCE_KEYS,
}
_SOURCE_TRANSPORT: dict[str, Transport] = {"Process": "stdio", "Http": "http", "Sse": "sse", "WebSocket": "websocket"}
_DESKTOP_STDIO_KEYS = frozenset({"type", "command", "args", "env", "cwd", "disabled", "tool_prefix"})
_DESKTOP_REMOTE_KEYS = frozenset({"type", "url", "headers", "disabled", "tool_prefix"})
_DESKTOP_TYPES: dict[str, Transport] = {
    "stdio": "stdio", "http": "http", "streamable-http": "http", "streamableHttp": "http",
    "sse": "sse", "websocket": "websocket",
}
_KNOWN_KEYS = _GLOBAL_KEYS.union(_MISTRAL_SERVER_KEYS, _DESKTOP_STDIO_KEYS, _DESKTOP_REMOTE_KEYS,
                                 *_SOURCE_KEYS.values())


class McpConfigError(ValueError):
    """A bad MCP config; the message names the file, the server and the field."""


@dataclass(frozen=True)
class McpServerConfig:
    """One MCP server to connect to, and how."""

    id: str
    name: str
    transport: Transport
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    bearer_token: str | None = None
    timeout_s: float | None = None
    enabled: bool = True
    tool_prefix: str | None = None
    resources: tuple[str, ...] | None = None


@dataclass(frozen=True)
class McpConfig:
    """Every MCP server to connect to, plus the pool's global settings."""

    servers: tuple[McpServerConfig, ...]
    auto_register_tools: bool = True
    tool_timeout_s: float = DEFAULT_TOOL_TIMEOUT_S
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    source: str = ""


def resolve_mcp_config_path(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The config file to read: the --mcp-config value, else $MCP_CONFIG_PATH if non-empty, else None."""
    if cli_value:
        return cli_value
    return environ.get(MCP_CONFIG_ENV) or None


def load_mcp_config(path: str | os.PathLike, *, environ: Mapping[str, str] | None = None) -> McpConfig:
    """Read and validate an MCP config file (either format); raises McpConfigError."""
    source = os.fsdecode(path)
    where = f"mcp config {source}"
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise McpConfigError(f"{where}: file not found") from None
    except IsADirectoryError:
        raise McpConfigError(f"{where}: is a directory, not a JSON file") from None
    except UnicodeDecodeError:
        raise McpConfigError(f"{where}: is not UTF-8 text") from None
    except OSError as e:
        raise McpConfigError(f"{where}: cannot read the file: {e.strerror}") from None
    try:
        data = json.loads(text, object_pairs_hook=_object_without_duplicates)
    except _DuplicateKeyError as e:
        raise McpConfigError(f"{where}: key {e.args[0]!r} appears twice in one JSON object") from None
    except json.JSONDecodeError as e:
        raise McpConfigError(f"{where}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    return parse_mcp_config(data, source, environ=environ)


def parse_mcp_config(data: object, source: str = "<config>", *,
                     environ: Mapping[str, str] | None = None) -> McpConfig:
    """Validate decoded JSON (either format) into an McpConfig; raises McpConfigError."""
    where = f"mcp config {source}"
    environ = os.environ if environ is None else environ
    if not isinstance(data, dict):
        raise McpConfigError(f"{where}: expected a JSON object at the top level, got {_show(data)}")
    top = _Reader(data, where, "", environ)
    if "servers" in top.items and "mcpServers" in top.items:
        raise McpConfigError(f"{where}: mixes the mistral.rs format ('servers') and the Claude Desktop format "
                             "('mcpServers'); use one of them")
    if "servers" in top.items:
        top.check_keys(_GLOBAL_KEYS | {"servers"})
        servers = _mistral_servers(top)
    elif "mcpServers" in top.items:
        top.check_keys(_GLOBAL_KEYS | {"mcpServers"})
        servers = _desktop_servers(top)
    else:
        raise McpConfigError(f"{where}: expected a 'servers' list (mistral.rs format) or an 'mcpServers' object "
                             "(Claude Desktop format)")
    _check_unique(servers, where)
    tool_timeout_s = top.seconds("tool_timeout_secs")
    return McpConfig(
        servers=tuple(parsed.server for parsed in servers),
        auto_register_tools=top.boolean("auto_register_tools", True),
        tool_timeout_s=DEFAULT_TOOL_TIMEOUT_S if tool_timeout_s is None else tool_timeout_s,
        max_concurrent_calls=top.integer("max_concurrent_calls", DEFAULT_MAX_CONCURRENT_CALLS, minimum=1),
        source=source,
    )


@dataclass(frozen=True)
class _Parsed:
    server: McpServerConfig
    label: str          # "servers[1]" or "mcpServers[1]"
    id_derived: bool


def _mistral_servers(top: _Reader) -> list[_Parsed]:
    raw_servers = top.items["servers"]
    if not isinstance(raw_servers, list):
        hint = " (a name -> server object is the Claude Desktop format: call it 'mcpServers')"
        top.fail("servers", f"expected a list of servers, got {_show(raw_servers)}"
                            f"{hint if isinstance(raw_servers, dict) else ''}")
    parsed = []
    for index, raw in enumerate(raw_servers):
        label = f"servers[{index}]"
        r = _Reader.of(raw, f"{top.where}: server {label}", "", top.environ)
        explicit_id = r.string("id")
        if explicit_id is not None:
            r.where = f"{top.where}: server {explicit_id!r} ({label})"
        name = r.string("name")
        if explicit_id is None and name is None:
            r.fail("name", "missing: a server needs a 'name' (or an 'id')")
        server_id = explicit_id if explicit_id is not None else _slug(name)
        r.where = f"{top.where}: server {server_id!r} ({label})"
        r.check_keys(_MISTRAL_SERVER_KEYS)
        s = r.child("source")
        kind = s.string("type", required=True)
        if kind not in _SOURCE_TRANSPORT:
            s.fail("type", f"unknown source type {_show(kind)} (expected one of: {', '.join(_SOURCE_TRANSPORT)})")
        s.check_keys(_SOURCE_KEYS[kind], applies_to=f"{kind} sources")
        transport = _SOURCE_TRANSPORT[kind]
        server = McpServerConfig(
            id=server_id, name=name if name is not None else server_id, transport=transport,
            **_endpoint(s, transport, cwd_key="work_dir"),
            bearer_token=r.string("bearer_token", expand=True) or None,
            timeout_s=s.seconds("timeout_secs"),
            enabled=r.boolean("enabled", True),
            tool_prefix=r.string("tool_prefix"),
            resources=r.strings("resources"),
        )
        _check_server(server, r, s)
        parsed.append(_Parsed(server, label, explicit_id is None))
    return parsed


def _desktop_servers(top: _Reader) -> list[_Parsed]:
    entries = top.child("mcpServers")
    parsed = []
    for index, (key, raw) in enumerate(entries.items.items()):
        label = f"mcpServers[{index}]"
        if not key:
            entries.fail("", f"{label} has an empty name")
        r = _Reader.of(raw, f"{top.where}: server {key!r} ({label})", "", top.environ)
        kind = r.string("type")
        if kind is not None and kind not in _DESKTOP_TYPES:
            r.fail("type", f"unknown type {_show(kind)} (expected one of: {', '.join(_DESKTOP_TYPES)})")
        if kind is None and "command" in r.items and "url" in r.items:
            r.fail("url", "set either 'command' (a stdio server) or 'url', not both")
        if kind is None and "command" not in r.items and "url" not in r.items:
            r.fail("command", "missing: a server needs a 'command' (stdio) or a 'url'")
        if kind == "stdio" or (kind is None and "url" not in r.items):
            transport: Transport = "stdio"
        elif kind is not None:
            transport = _DESKTOP_TYPES[kind]
        else:
            transport = _transport_of_url(r.string("url", expand=True) or "")
        r.check_keys(_DESKTOP_STDIO_KEYS if transport == "stdio" else _DESKTOP_REMOTE_KEYS,
                     applies_to=f"{transport} servers")
        server = McpServerConfig(
            id=key, name=key, transport=transport, **_endpoint(r, transport, cwd_key="cwd"),
            enabled=not r.boolean("disabled", False), tool_prefix=r.string("tool_prefix"),
        )
        _check_server(server, r, r)
        parsed.append(_Parsed(server, label, False))
    return parsed


def _endpoint(r: _Reader, transport: Transport, *, cwd_key: str) -> dict:
    """The transport fields (command/args/env/cwd or url/headers) of one server."""
    if transport == "stdio":
        command = r.string("command", required=True)
        if not command.strip():
            r.fail("command", "must be a non-empty string")
        return {"command": command, "args": r.strings("args", expand=True) or (),
                "env": r.pairs("env", expand=True, scalars=True), "cwd": r.string(cwd_key, expand=True) or None}
    url = r.string("url", required=True, expand=True)
    parts = urlsplit(url)
    schemes = ("ws", "wss") if transport == "websocket" else ("http", "https")
    if parts.scheme not in schemes or not parts.netloc:
        r.fail("url", f"{_show(url)} is not a {' or '.join(s + '://' for s in schemes)} URL "
                      f"(needed for a {transport} server)")
    return {"url": url, "headers": r.pairs("headers", expand=True, scalars=False)}


def _transport_of_url(url: str) -> Transport:
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return "websocket"
    return "sse" if parts.path.rstrip("/").endswith("/sse") else "http"


def _check_server(server: McpServerConfig, r: _Reader, endpoint: _Reader) -> None:
    if server.tool_prefix is not None and not _TOOL_PREFIX.match(server.tool_prefix):
        r.fail("tool_prefix", f"{_show(server.tool_prefix)} must match {TOOL_PREFIX_PATTERN}")
    if server.tool_prefix is None and not _TOOL_PREFIX.match(server.id):
        r.fail("tool_prefix", f"missing, and the id {server.id!r} cannot be the tool prefix: it must match "
                              f"{TOOL_PREFIX_PATTERN}; set 'tool_prefix' or use a simpler id")
    if server.bearer_token is not None:
        if server.transport == "stdio":
            r.fail("bearer_token", "only applies to http, sse and websocket servers")
        if any(name.lower() == "authorization" for name, _ in server.headers):
            headers = endpoint.field("headers")
            r.fail("bearer_token", f"set either bearer_token or an Authorization header in {headers}, not both")


def _check_unique(servers: list[_Parsed], where: str) -> None:
    ids: dict[str, _Parsed] = {}
    prefixes: dict[str, _Parsed] = {}
    for p in servers:
        label = f"{where}: server {p.server.id!r} ({p.label})"
        first = ids.setdefault(p.server.id, p)
        if first is not p:
            hint = " (derived from its name; set a distinct 'id')" if p.id_derived else ""
            raise McpConfigError(f"{label}: id: {p.server.id!r} is already the id of {first.label}{hint}")
        prefix = p.server.tool_prefix or p.server.id
        first = prefixes.setdefault(prefix, p)
        if first is not p:
            field_name = "tool_prefix" if p.server.tool_prefix else "id"
            raise McpConfigError(f"{label}: {field_name}: tool prefix {prefix!r} is already used by server "
                                 f"{first.server.id!r} ({first.label}); their tool names would collide")


class _Reader:
    """One JSON object being validated: typed getters that raise McpConfigError naming where the value is."""

    def __init__(self, items: dict, where: str, path: str, environ: Mapping[str, str]):
        self.items = {k: v for k, v in items.items() if not (isinstance(k, str) and k.startswith("_"))}
        self.where, self.path, self.environ = where, path, environ
        for key in self.items:
            if not isinstance(key, str):
                self.fail("", f"keys must be strings, got {_show(key)}")

    @classmethod
    def of(cls, value: object, where: str, path: str, environ: Mapping[str, str]) -> _Reader:
        if not isinstance(value, dict):
            raise McpConfigError(f"{where}: {path + ': ' if path else ''}expected an object, got {_show(value)}")
        return cls(value, where, path, environ)

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path and key else self.path or key

    def fail(self, key: str, problem: str) -> NoReturn:
        name = self.field(key)
        raise McpConfigError(f"{self.where}: {name + ': ' if name else ''}{problem}")

    def child(self, key: str) -> _Reader:
        if self.items.get(key) is None:
            self.fail(key, "missing")
        return _Reader.of(self.items[key], self.where, self.field(key), self.environ)

    def check_keys(self, allowed: frozenset[str], applies_to: str = "") -> None:
        for key in self.items:
            if key in allowed:
                continue
            if applies_to and key in _KNOWN_KEYS:
                self.fail(key, f"does not apply to {applies_to} (allowed here: {', '.join(sorted(allowed))})")
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.fail(key, f"unknown key ({hint}expected one of: {', '.join(sorted(allowed))})")

    def string(self, key: str, *, required: bool = False, expand: bool = False) -> str | None:
        value = self.items.get(key)
        if value is None:
            if required:
                self.fail(key, "missing (must be a non-empty string)")
            return None
        if not isinstance(value, str) or value == "":
            self.fail(key, f"must be a non-empty string, got {_show(value)}")
        return self._expand(value, key) if expand else value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.items.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {_show(value)}")
        return value

    def seconds(self, key: str) -> float | None:
        value = self.items.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            self.fail(key, f"must be a number of seconds > 0, got {_show(value)}")
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        value = self.items.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, f"must be an integer >= {minimum}, got {_show(value)}")
        return value

    def strings(self, key: str, *, expand: bool = False) -> tuple[str, ...] | None:
        value = self.items.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(key, f"must be a list of strings, got {_show(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{key}[{i}]", f"must be a string, got {_show(item)}")
        return tuple(self._expand(item, f"{key}[{i}]") if expand else item for i, item in enumerate(value))

    def pairs(self, key: str, *, expand: bool, scalars: bool) -> tuple[tuple[str, str], ...]:
        """A string -> string map (env or headers), as ordered pairs; scalars=True turns numbers/bools into text."""
        if self.items.get(key) is None:
            return ()
        m = self.child(key)
        out = []
        for name, value in m.items.items():
            if scalars and isinstance(value, bool):
                value = "true" if value else "false"
            elif scalars and isinstance(value, (int, float)):
                value = str(value)
            if not isinstance(value, str):
                kinds = "a string, number or boolean" if scalars else "a string"
                m.fail(name, f"must be {kinds}, got {_show(value)}")
            if scalars and (name == "" or "=" in name or "\0" in name):
                m.fail(name, "is not a valid environment variable name")
            if not scalars and not _HEADER_NAME.match(name):
                m.fail(name, "is not a valid HTTP header name")
            value = m._expand(value, name) if expand else value
            if not scalars and ("\r" in value or "\n" in value):
                m.fail(name, "header values may not contain line breaks")
            out.append((name, value))
        return tuple(out)

    def _expand(self, text: str, key: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            body = match.group(1)
            variable = _VARIABLE.fullmatch(body) if body is not None else None
            if variable is None:
                shown = match.group(0) if body is None else "${" + body + "}"
                self.fail(key, f"malformed {shown!r}: expected ${{NAME}} or ${{NAME:-default}} ($$ is a literal $)")
            name, default = variable.groups()
            value = self.environ.get(name)
            if not value and default is not None:
                return default
            if value is None:
                self.fail(key, f"environment variable {name!r} is not set (use ${{{name}:-default}} for a default)")
            return value

        return _EXPANSION.sub(substitute, text)


def _slug(name: str) -> str:
    """A stable id from a display name: 'My Files!' -> 'my-files' (never random, so ids survive restarts)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:32].strip("-")
    return slug or "server-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def _show(value: object) -> str:
    """A short description of a bad value for an error message."""
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        text = json.dumps(value)
        return text if len(text) <= 60 else f"a {len(value)}-character string"
    return {list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


class _DuplicateKeyError(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object hook that rejects repeated keys, which json.loads would otherwise let the last one win."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out

