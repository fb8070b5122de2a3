"""`agent-runtime chat`: an interactive terminal chat with the runtime's tools (MCP servers, web search).

The models load in-process (the same options as `serve`), the MCP pool starts on the chat's event loop,
and every turn runs the agent loop: the answer streams (rendered as Markdown when it ends), reasoning is
dimmed, each tool call is shown with its arguments, result and duration, and tok/s follow the answer.
Input comes from prompt_toolkit (history with the arrow keys) on a terminal, else line by line from
stdin with the same commands. Ctrl-C during a turn cancels it (closing the generation aborts the
engine request); Ctrl-C or Ctrl-D at an empty prompt leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.text import Text

from agent_runtime.agent import AgentEvent, AgentLoop
from agent_runtime.runtime import Runtime, ServerSettings
from agent_runtime.tool_calling import ToolChoice
from engine import SamplingParams

log = logging.getLogger(__name__)

POOL_WAIT_S = 10.0  # how long the first prompt waits for the MCP servers to connect
PROMPT = "you> "
HELP = """\
/help                 this help
/exit                 leave (also Ctrl-D, or Ctrl-C at an empty prompt)
/clear                forget the conversation
/system [TEXT]        show or set the system message ('/system -' removes it)
/temperature X        sampling temperature (0 = greedy); also /top_p X, /max_tokens N, /seed N|none
/tools                registered tools, and the MCP servers' state
/tool NAME|none       force the next message to call tool NAME
/model [ID]           show the model, or switch among the served ones
/save FILE            write the conversation as JSON
Ctrl-C during an answer stops it."""


class ChatSession:
    """The conversation and its settings; `command` runs a /command, `turn` one agent-loop turn."""

    def __init__(self, runtime: Runtime, console: Console, *, system: str | None = None,
                 sampling: dict[str, Any] | None = None, live: bool = True) -> None:
        self.runtime = runtime
        self.console = console
        self.live = live
        self.model = next(iter(runtime.engines))
        self.system = system
        self.sampling: dict[str, Any] = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 1024, "seed": None,
                                          **(sampling or {})}
        SamplingParams(**self.sampling)  # bad defaults fail here
        self.messages: list[dict] = []
        self.forced_tool: str | None = None

    # ---- commands -------------------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Run a /command; False when the chat should end."""
        name, _, arg = line[1:].partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("exit", "quit"):
            return False
        handler = self._commands().get(name)
        if handler is None:
            self.error(f"unknown command /{name} (try /help)")
        else:
            handler(arg)
        return True

    def _commands(self) -> dict[str, Callable[[str], None]]:
        return {"help": lambda _: self.console.print(HELP, markup=False, highlight=False),
                "clear": self._clear, "system": self._system,
                "temperature": self._number("temperature", float),
                "top_p": self._number("top_p", float), "max_tokens": self._number("max_tokens", int),
                "seed": self._number("seed", int), "tools": self._tools, "tool": self._tool,
                "model": self._model, "save": self._save}

    def error(self, message: str) -> None:
        self.console.print(Text(message, style="red"))

    def info(self, message: str) -> None:
        self.console.print(Text(message, style="cyan"))

    def _clear(self, _arg: str) -> None:
        self.messages.clear()
        self.forced_tool = None
        self.info("conversation cleared")

    def _system(self, arg: str) -> None:
        if not arg:
            self.info(f"system: {self.system!r}" if self.system else "no system message")
            return
        self.system = None if arg == "-" else arg
        self.info("system message removed" if self.system is None else "system message set")

    def _number(self, key: str, kind: type) -> Callable[[str], None]:
        def set_value(arg: str) -> None:
            if not arg:
                self.info(f"{key} = {self.sampling[key]}")
                return
            try:
                value = None if key == "seed" and arg.lower() == "none" else kind(arg)
            except ValueError:
                expected = "an integer" if kind is int else "a number"
                self.error(f"/{key}: invalid value {arg!r} (expected {expected})")
                return
            try:
                SamplingParams(**{**self.sampling, key: value})
            except ValueError as exc:  # SamplingParamsError: out of range
                self.error(f"/{key}: invalid value {arg!r} ({exc})")
                return
            self.sampling[key] = value
            self.info(f"{key} = {value}")
        return set_value

    def _tools(self, _arg: str) -> None:
        specs = self.runtime.registry.specs()
        self.console.print(Text(f"{len(specs)} tool(s)", style="bold"))
        for spec in specs:
            line = Text("  ")
            line.append(spec.name, style="bold")
            line.append(f"  [{spec.source}]  ", style="magenta")
            line.append(spec.description.strip().splitlines()[0][:80] if spec.description.strip() else "",
                        style="dim")
            self.console.print(line)
        pool = self.runtime.mcp_pool
        if pool is not None:
            self.console.print(Text("MCP servers", style="bold"))
            for s in pool.status():
                state = Text(f"  {s.id}: {s.state}, {s.tools} tool(s), {s.transport}")
                if s.last_error:
                    state.append(f" - {s.last_error}", style="red")
                self.console.print(state)
        if self.forced_tool:
            self.info(f"the next message must call {self.forced_tool}")

    def _tool(self, arg: str) -> None:
        if not arg:
            self.info(f"forced tool: {self.forced_tool or 'none'}")
        elif arg == "none":
            self.forced_tool = None
            self.info("no forced tool")
        elif arg not in self.runtime.registry:
            self.error(f"/tool: unknown tool {arg!r} (see /tools)")
        else:
            self.forced_tool = arg
            self.info(f"the next message must call {arg}")

    def _model(self, arg: str) -> None:
        if not arg:
            self.info(f"model: {self.model} (served: {', '.join(self.runtime.engines)})")
        elif arg not in self.runtime.engines:
            self.error(f"/model: unknown model {arg!r}; served: {', '.join(self.runtime.engines)}")
        else:
            self.model = arg
            self.info(f"model: {arg}")

    def _save(self, arg: str) -> None:
        if not arg:
            self.error("/save: needs a FILE")
            return
        data = {"model": self.model, "sampling": self.sampling, "messages": self.conversation()}
        try:
            Path(arg).expanduser().write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            self.error(f"/save: cannot write {arg}: {exc}")
            return
        self.info(f"saved {len(data['messages'])} message(s) to {arg}")

    # ---- turns ----------------------------------------------------------------------------------

    def conversation(self) -> list[dict]:
        return [*([{"role": "system", "content": self.system}] if self.system else []), *self.messages]

    async def turn(self, text: str) -> None:
        """One user message through the agent loop; the history grows only when the turn completes."""
        engine = self.runtime.engines[self.model]
        loop = AgentLoop(engine, self.runtime.tool_parser(self.model), self.runtime.registry,
                         max_tool_rounds=self.runtime.settings.max_tool_rounds)
        choice = ToolChoice("required", (self.forced_tool,)) if self.forced_tool else None
        self.forced_tool = None
        conversation = [*self.conversation(), {"role": "user", "content": text}]
        view = TurnView(self.console, live=self.live)
        start = time.perf_counter()
        view.start()
        try:
            result = await loop.run(conversation, SamplingParams(**self.sampling), choice=choice,
                                    on_event=view.on_event)
        except asyncio.CancelledError:
            view.stop()
            self.error("(interrupted)")
            raise
        except Exception as exc:  # noqa: BLE001 - an engine or tool failure ends the turn, not the chat
            view.stop()
            self.error(f"error: {exc}")
            return
        view.stop()
        elapsed = time.perf_counter() - start
        history = result.messages[1:] if self.system else result.messages
        self.messages = [*history, {"role": "assistant", "content": result.message.content}]
        decode_s = time.perf_counter() - (result.first_token_at or start)
        rate = result.completion_tokens / decode_s if decode_s > 0 else 0.0
        self.console.print(Text(f"{result.completion_tokens} tokens, {rate:.1f} tok/s, "
                                f"{result.rounds} round(s), {len(result.executions)} tool call(s), "
                                f"{elapsed:.1f} s, finish: {result.finish_reason}", style="dim"))


class TurnView:
    """One turn's events: a Live area (streaming text, spinner) on a terminal, plain text otherwise."""

    def __init__(self, console: Console, live: bool = True) -> None:
        self.console = console
        self.content = ""
        self.reasoning = ""
        self.running: list[str] = []
        self.spinner = Spinner("dots", style="cyan")  # one instance: its frame follows the time since start
        self.live = Live(console=console, transient=True, refresh_per_second=10,
                         get_renderable=self._render) if live else None

    def start(self) -> None:
        if self.live is not None:
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
        self._flush()

    async def on_event(self, event: AgentEvent) -> None:
        if event.delta is not None:
            if self.live is None:
                self._write(event.delta.reasoning, "dim")
                self._write(event.delta.content, None)
            else:
                self.reasoning += event.delta.reasoning
                self.content += event.delta.content
        if event.calls_started:
            self._flush()
            for call in event.calls_started:
                line = Text("→ ", style="yellow")
                line.append(call.name, style="bold yellow")
                line.append(f"({_clip(call.arguments, 200)})", style="yellow")
                self.console.print(line)
            self.running = [c.name for c in event.calls_started]
        if event.execution is not None:
            e = event.execution
            error = e.result.is_error
            line = Text("✗ " if error else "✓ ", style="red" if error else "green")
            line.append(e.call.name, style="bold")
            line.append(f" {1000 * (e.finished - e.started):.0f} ms ", style="dim")
            line.append(_clip(" ".join(e.result.for_model().split()), 200))
            self.console.print(line)
            with contextlib.suppress(ValueError):
                self.running.remove(e.call.name)

    def _render(self):
        height = max(self.console.height - 4, 3)
        parts = []
        if self.reasoning:
            parts.append(Text(_tail(self.reasoning, height // 2), style="dim italic"))
        if self.content:
            parts.append(Text(_tail(self.content, height)))
        label = f"running {', '.join(self.running)}" if self.running else "generating"
        self.spinner.update(text=Text(label, style="dim"))
        parts.append(self.spinner)
        return Group(*parts)

    def _flush(self) -> None:
        """What streamed since the last flush, printed for good (Markdown on a terminal)."""
        if self.live is None:
            if self.content or self.reasoning:
                sys.stdout.write("\n")
                sys.stdout.flush()
        else:
            if self.reasoning.strip():
                self.console.print(Text(self.reasoning.strip(), style="dim italic"))
            if self.content.strip():
                self.console.print(Markdown(self.content.strip()))
        self.content = self.reasoning = ""

    def _write(self, text: str, style: str | None) -> None:
        if text:
            self.content += text  # only its emptiness matters here
            self.console.print(text, style=style, end="", markup=False, highlight=False, soft_wrap=True)
            self.console.file.flush()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---- the command --------------------------------------------------------------------------------


def run_chat(args: argparse.Namespace) -> int:
    from agent_runtime.serve_command import build_runtime

    if args.log_level == "INFO":  # the default: keep the engine's and the pool's INFO lines out of the chat
        logging.getLogger().setLevel(logging.WARNING)
    sampling = {"temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_tokens,
                "seed": args.seed}
    SamplingParams(**sampling)  # bad values fail before the models load
    console = Console(highlight=False)
    interactive = sys.stdin.isatty()
    with console.status("loading the model…") if interactive else contextlib.nullcontext():
        runtime = build_runtime(args, ServerSettings(max_tool_rounds=args.max_tool_rounds))
    try:
        session = ChatSession(runtime, console, system=args.system, sampling=sampling,
                              live=console.is_terminal)
        return asyncio.run(_chat(session, interactive))
    finally:
        runtime.shutdown()


async def _chat(session: ChatSession, interactive: bool) -> int:
    console, runtime = session.console, session.runtime
    pool = runtime.mcp_pool
    if pool is not None:
        with console.status("connecting to the MCP servers…") if interactive else contextlib.nullcontext():
            await pool.start(wait_s=POOL_WAIT_S)
    try:
        console.print(Text(f"agent-runtime chat: {session.model}, {len(runtime.registry)} tool(s). "
                           "/help for commands, /exit to leave.", style="bold"))
        read = _prompt_reader() if interactive else _line_reader()
        while True:
            line = await read()
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not session.command(line):
                    break
                continue
            await _interruptible(session.turn(line))
    finally:
        if pool is not None:
            await pool.stop()
    return 0


async def _interruptible(coro) -> None:
    """Run a turn as a task that SIGINT (Ctrl-C) cancels; return when it ends either way."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():  # the chat itself is being cancelled, not just the turn
            raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _prompt_reader():
    """prompt_toolkit input with in-memory history; Ctrl-C clears a line, or leaves at an empty prompt."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("c-c")
    def _(event) -> None:
        if event.app.current_buffer.text:
            event.app.current_buffer.reset()
        else:
            event.app.exit(exception=EOFError)

    prompt = PromptSession(history=InMemoryHistory(), key_bindings=bindings)

    async def read() -> str | None:
        try:
            return await prompt.prompt_async(PROMPT)
        except (EOFError, KeyboardInterrupt):
            return None

    return read


def _line_reader():
    """stdin lines from a daemon thread (a blocked read never holds up the exit); Ctrl-C ends the input."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=pump, name="chat-stdin", daemon=True).start()

    async def read() -> str | None:
        loop.add_signal_handler(signal.SIGINT, lambda: lines.put_nowait(None))
        try:
            return await lines.get()
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    return read
