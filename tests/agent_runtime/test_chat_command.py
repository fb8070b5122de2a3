"""`agent-runtime chat`: the session's commands in-process, and the real terminal chat driven by pexpect
(the embedded model with mcp-server-time): a forced tool call rendered, /tools, Ctrl-C, /exit."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

from rich.console import Console  # noqa: E402

from agent_runtime.chat_command import ChatSession  # noqa: E402
from agent_runtime.runtime import Runtime  # noqa: E402

TIME_SERVER = Path(sys.executable).with_name("mcp-server-time")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def session() -> tuple[ChatSession, Console]:
    console = Console(record=True, width=120, force_terminal=False)
    return ChatSession(Runtime({"m1": object(), "m2": object()}), console, live=False), console


def test_commands_change_the_session_and_name_bad_values(tmp_path):
    chat, console = session()
    assert chat.command("/temperature 0.2") and chat.sampling["temperature"] == 0.2
    assert chat.command("/max_tokens 50") and chat.sampling["max_tokens"] == 50
    chat.command("/seed 7")
    chat.command("/top_p 0.5")
    assert chat.sampling == {"temperature": 0.2, "top_p": 0.5, "max_tokens": 50, "seed": 7}
    chat.command("/seed none")
    assert chat.sampling["seed"] is None
    console.export_text()
    for bad, name in [("/temperature abc", "/temperature"), ("/top_p 5", "/top_p"),
                      ("/max_tokens -1", "/max_tokens"), ("/bogus", "/bogus"), ("/model m3", "m3"),
                      ("/tool nope", "nope")]:
        chat.command(bad)
        out = console.export_text().strip()
        assert len(out.splitlines()) == 1 and name in out, (bad, out)
    assert chat.sampling["temperature"] == 0.2 and chat.model == "m1"
    chat.command("/model m2")
    assert chat.model == "m2"
    chat.command("/system Be brief.")
    chat.messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    chat.command(f"/save {tmp_path / 'c.json'}")
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["model"] == "m2"
    assert [m["role"] for m in saved["messages"]] == ["system", "user", "assistant"]
    chat.command("/clear")
    assert chat.messages == [] and chat.system == "Be brief."
    assert chat.command("/exit") is False


@pytest.mark.slow
@pytest.mark.skipif(not TIME_SERVER.exists(), reason="mcp-server-time is not installed (a test dependency)")
def test_terminal_chat_with_a_tool_interrupt_and_exit(tmp_path):
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"time": {"command": str(TIME_SERVER),
                                                           "args": ["--local-timezone", "UTC"]}}}))
    env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color", "COLUMNS": "160"}
    started = time.monotonic()
    child = pexpect.spawn(sys.executable, ["-m", "agent_runtime", "chat", "--no-embeddings", "--mcp-config",
                                           str(config), "--max-tool-rounds", "1", "--max-tokens", "40",
                                           "--temperature", "0", "--kv-cache-memory", "256MiB"],
                          env=env, encoding="utf-8", timeout=60, dimensions=(50, 160))
    child.logfile_read = log = open(tmp_path / "chat.log", "w")  # noqa: SIM115 - read on failure
    try:
        child.expect("you>")
        child.sendline("/tools")
        child.expect("time__get_current_time")
        child.expect("time: ready")
        child.expect("you>")
        child.sendline("/tool time__get_current_time")
        child.expect("must call time__get_current_time")
        child.expect("you>")
        child.sendline("What time is it?")
        child.expect("time__get_current_time")  # the call, as it starts
        child.expect("datetime")  # its result
        child.expect(r"tok/s")  # the answer ended
        child.expect("you>")
        child.sendline("/max_tokens 2000")
        child.expect("you>")
        child.sendline("Write a very long story about a dragon and a knight.")
        child.expect("generating")
        time.sleep(1.0)
        child.sendintr()
        child.expect("interrupted", timeout=10)
        child.expect("you>", timeout=10)
        child.sendline("/exit")
        child.expect(pexpect.EOF, timeout=20)
    finally:
        child.close()
        log.close()
    assert child.exitstatus == 0, ANSI.sub("", (tmp_path / "chat.log").read_text())[-3000:]
    assert time.monotonic() - started < 120
