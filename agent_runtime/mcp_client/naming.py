"""Registered names of MCP tools: `<prefix>__<tool>`, valid as OpenAI function names, deterministic."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence

log = logging.getLogger(__name__)

_INVALID = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 64


def tool_name(prefix: str, tool: str) -> str:
    """`prefix__tool` with characters OpenAI does not allow replaced; long names keep a hash of the original."""
    name = _INVALID.sub("_", f"{prefix}__{tool}")
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(f"{prefix}__{tool}".encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9]}_{digest}"
    return name


def assign_names(servers: Sequence[tuple[str, str, Sequence[str]]]) -> dict[tuple[str, str], str]:
    """Names for every (server id, tool) of the connected servers, in config order.

    `servers` is [(server id, prefix, tool names)]. Two tools that map to the same name (after character
    replacement, or across servers) are told apart by `_2`, `_3`... given in config order, then in each
    server's sorted tool order, so the same servers and tools always get the same names. Logged.
    """
    taken: dict[str, tuple[str, str]] = {}
    names: dict[tuple[str, str], str] = {}
    for server_id, prefix, tools in servers:
        for tool in sorted(tools):
            base = name = tool_name(prefix, tool)
            n = 1
            while name in taken:
                n += 1
                name = f"{base[: MAX_NAME - len(str(n)) - 1]}_{n}"
            if name != base:
                other = taken[base]
                log.warning("MCP tool %r of server %r would be named %r like %r of server %r: registered as %r",
                            tool, server_id, base, other[1], other[0], name)
            taken[name] = (server_id, tool)
            names[(server_id, tool)] = name
    return names
