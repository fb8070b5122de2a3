"""StopStringMatcher: cuts streamed output at the first stop string without emitting any of it."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import InvalidRequestError


@dataclass(frozen=True)
class StopResult:
    """What one piece of streamed text released: the safe text, and the stop string if it ended."""

    text: str
    stopped: bool
    stop_string: str | None


class StopStringMatcher:
    """Finds stop strings in a text stream, holding back any tail that could start one.

    An Aho-Corasick automaton over the stop strings is fed one character at a time; its state is
    the longest tail of the stream that is a prefix of some stop string, which is exactly the text
    to hold back. The first stop string to be completed wins (for stop strings that do not overlap,
    the earliest in the text); if several end at the same character, the longest. That rule gives
    the same result however the text is split into deltas. A feed costs O(len(delta) + longest
    stop string).
    """

    def __init__(self, stop: Sequence[str]) -> None:
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        for s in stops:
            if not isinstance(s, str) or s == "":
                raise InvalidRequestError(f"invalid stop string {s!r}: must be a non-empty string")
        self._goto, self._fail, self._depth, self._match = _build_automaton(stops)
        self._state = 0
        self._held = ""
        self._stop_string: str | None = None

    def feed(self, delta: str) -> StopResult:
        """Takes the next piece of output text; returns what is now safe to emit."""
        if self._stop_string is not None:
            return StopResult("", True, self._stop_string)
        if not self._goto[0]:
            return StopResult(delta, False, None)
        text = self._held + delta
        state = self._state
        for i, char in enumerate(delta, start=len(self._held) + 1):
            while state and char not in self._goto[state]:
                state = self._fail[state]
            state = self._goto[state].get(char, 0)
            stop_string = self._match[state]
            if stop_string is not None:
                self._stop_string = stop_string
                self._state, self._held = 0, ""
                return StopResult(text[: i - len(stop_string)], True, stop_string)
        self._state = state
        safe = len(text) - self._depth[state]
        self._held = text[safe:]
        return StopResult(text[:safe], False, None)

    def flush(self) -> str:
        """Returns the held-back text at the end of the stream (nothing once a stop string matched)."""
        held, self._held, self._state = self._held, "", 0
        return "" if self._stop_string is not None else held


def _build_automaton(
    stops: tuple[str, ...],
) -> tuple[list[dict[str, int]], list[int], list[int], list[str | None]]:
    """Builds the trie (goto), failure links, state depths, and the longest stop string ending at each state."""
    goto: list[dict[str, int]] = [{}]
    depth = [0]
    match: list[str | None] = [None]
    for stop in stops:
        state = 0
        for char in stop:
            nxt = goto[state].get(char)
            if nxt is None:
                nxt = len(goto)
                goto[state][char] = nxt
                goto.append({})
                depth.append(depth[state] + 1)
                match.append(None)
            state = nxt
        match[state] = stop

    fail = [0] * len(goto)
    # Breadth first, so a state's failure target (always shallower) is finished before the state.
    queue = deque(goto[0].values())
    while queue:
        state = queue.popleft()
        for char, nxt in goto[state].items():
            target = fail[state]
            while target and char not in goto[target]:
                target = fail[target]
            fail[nxt] = goto[target].get(char, 0)
            if match[nxt] is None:
                match[nxt] = match[fail[nxt]]
            queue.append(nxt)
    return goto, fail, depth, match
