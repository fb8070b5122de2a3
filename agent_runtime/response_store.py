"""ResponseStore: the Responses API's stored responses, and the conversations that led to them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class StoredResponse:
    """One stored response and the input items (inherited turns included) it answered.

    `cancel` is set while the response is still being generated: it stops the generation and
    returns the response as cancelled. Item dicts are shared between the entries of one
    conversation, never copied, so a long chain of turns costs a list of references per turn.
    """

    response: dict
    input_items: list[dict]
    cancel: Callable[[], dict] | None = None

    @property
    def conversation(self) -> list[dict]:
        """What a follow-up turn (`previous_response_id`) continues: the input, then the output."""
        return [*self.input_items, *self.response["output"]]


class ResponseStore:
    """An in-memory store of responses by id, bounded by evicting the least recently used.

    Methods never await, so on one asyncio loop each call is atomic: no lock is needed.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"invalid max_entries={max_entries!r}: must be an integer >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def put(self, entry: StoredResponse) -> StoredResponse:
        """Store (or replace) `entry` under its response's id, as the most recently used."""
        response_id = entry.response["id"]
        self._entries[response_id] = entry
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry

    def get(self, response_id: str) -> StoredResponse | None:
        entry = self._entries.get(response_id)
        if entry is not None:
            self._entries.move_to_end(response_id)
        return entry

    def delete(self, response_id: str) -> bool:
        """Forget a response; False when it was not stored."""
        return self._entries.pop(response_id, None) is not None

    def __len__(self) -> int:
        return len(self._entries)
