"""The OpenAI-compatible HTTP API (and Anthropic's Messages API) as one FastAPI app."""

from agent_runtime.openai.app import create_app

__all__ = ["create_app"]
