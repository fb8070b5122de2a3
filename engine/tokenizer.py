"""Tokenizer: text <-> token ids and chat-template rendering for one model."""

from __future__ import annotations

from pathlib import Path

from engine.errors import InvalidRequestError


class Tokenizer:
    """Wraps a transformers fast tokenizer with the model's EOS ids and (optional) template override."""

    def __init__(self, hf_tokenizer, eos_token_ids: list[int], chat_template: str | None = None) -> None:
        self.hf = hf_tokenizer
        ids = list(eos_token_ids)
        if hf_tokenizer.eos_token_id is not None and hf_tokenizer.eos_token_id not in ids:
            ids.append(hf_tokenizer.eos_token_id)
        self.eos_token_ids: tuple[int, ...] = tuple(ids)
        self.chat_template = _read_template(chat_template) if chat_template else hf_tokenizer.chat_template

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def render_chat(
        self,
        messages: list[dict],
        tools: list[dict] | None = None,
        add_generation_prompt: bool = True,
        enable_thinking: bool | None = None,
        **template_kwargs,
    ) -> str:
        """The prompt text for `messages`, through the model's chat template (Jinja, as HF renders it)."""
        if not self.chat_template:
            raise InvalidRequestError(
                "this model has no chat template; pass --chat-template FILE or send a raw prompt"
            )
        if enable_thinking is not None:
            template_kwargs["enable_thinking"] = enable_thinking
        try:
            return self.hf.apply_chat_template(
                messages,
                tools=tools,
                chat_template=self.chat_template,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
                **template_kwargs,
            )
        except Exception as exc:  # jinja2 TemplateError, template raise_exception(): the request is bad
            raise InvalidRequestError(f"chat template failed on these messages: {exc}") from exc

    def encode_chat(self, messages: list[dict], tools: list[dict] | None = None, **kwargs) -> list[int]:
        """Token ids of the rendered chat prompt; the template carries its own special tokens."""
        return self.encode(self.render_chat(messages, tools, **kwargs), add_special_tokens=False)


def _read_template(path_or_text: str) -> str:
    path = Path(path_or_text)
    if path.is_file():
        return path.read_text()
    if "{%" in path_or_text or "{{" in path_or_text:
        return path_or_text
    raise InvalidRequestError(f"chat template {path_or_text!r} is neither a file nor a Jinja template")
