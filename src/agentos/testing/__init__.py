"""Test helpers shipped with agentos: fake model servers that speak the real wire formats."""
from __future__ import annotations

from ._server import FakeServer, RecordedRequest
from .fake_gemini import FakeGemini, prompt_tokens
from .fake_openai import FakeOpenAI
from .script import Match, Prompt, Reply, blocked_reply, call_reply, count_tokens, error_reply, text_reply

__all__ = ["FakeGemini", "FakeOpenAI", "FakeServer", "Match", "Prompt", "RecordedRequest", "Reply", "blocked_reply",
           "call_reply", "count_tokens", "error_reply", "prompt_tokens", "text_reply"]
