"""IncrementalDetokenizer: turns generated token ids into text deltas without broken characters."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Prompt tokens decoded in front of the output so that the first generated token reads as a
# continuation: after a prompt, SentencePiece's "▁Paris" is " Paris", not "Paris".
_PROMPT_CONTEXT_TOKENS = 5
# A UTF-8 character has at most 4 bytes, so a context that starts inside one needs at most 3 more.
_MAX_CONTEXT_WIDENING = 3
_REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Streams the text of generated tokens, holding a character back until all its bytes are in.

    The prefix/read-offset scheme of vLLM's ``detokenize_incrementally``: the window holds the
    tokens of the last emitted delta (context) followed by the tokens not emitted yet. Each step
    decodes the context and the whole window and emits the difference once it no longer ends in
    U+FFFD (an incomplete character). The window spans a handful of tokens, so a step costs O(1)
    in the length of the output.

    With no prompt, the deltas add up to ``tokenizer.decode(output_ids)``. With a prompt they add up
    to the output's text as a continuation of the prompt, which differs only where the tokenizer's
    decoder strips a leading space (SentencePiece).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_token_ids: list[int],
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._window = self._prompt_context(list(prompt_token_ids))
        self._read = len(self._window)
        self._pieces: list[str] = []

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._pieces)

    def add(self, token_id: int) -> str:
        """Appends one generated token; returns the newly completed text (often "" mid-character)."""
        self._window.append(int(token_id))
        return self._emit(final=False)

    def flush(self) -> str:
        """Returns what is still held at the end of generation, as a full decode would render it."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        if self._read == len(self._window):
            return ""
        context_text = self._decode(self._window[: self._read])
        window_text = self._decode(self._window)
        # Shorter or equal: the new tokens render as nothing yet (a skipped special token, or a
        # SentencePiece space the decoder strips at the start of the window).
        if len(window_text) <= len(context_text):
            return ""
        if not final and window_text.endswith(_REPLACEMENT_CHAR):
            return ""
        delta = window_text[len(context_text) :]
        self._window = self._window[self._read :]
        self._read = len(self._window)
        self._pieces.append(delta)
        return delta

    def _prompt_context(self, prompt_token_ids: list[int]) -> list[int]:
        start = max(len(prompt_token_ids) - _PROMPT_CONTEXT_TOKENS, 0)
        lowest = max(start - _MAX_CONTEXT_WIDENING, 0)
        # A context cut inside a character decodes to U+FFFD; with byte-fallback tokens it would
        # even poison the output's first bytes (ByteFallback rejects a whole run of <0xNN> tokens
        # if any byte in it is invalid), so widen it to start on a character boundary.
        while start > lowest and self._decode(prompt_token_ids[start:]).startswith(_REPLACEMENT_CHAR):
            start -= 1
        return prompt_token_ids[start:]

    def _decode(self, token_ids: list[int]) -> str:
        # No clean-up of tokenization spaces: it rewrites text across token boundaries
        # (" 's" -> "'s"), which a stream cannot take back once the space has been sent.
        return self._tokenizer.decode(
            token_ids,
            skip_special_tokens=self._skip_special_tokens,
            clean_up_tokenization_spaces=False,
        )
