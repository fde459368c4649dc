"""Test helpers shipped with agentos: a real kernel in a subprocess, and fake model servers that
speak the real wire formats. The pytest fixtures built on them are in ``pytest_plugin``, which
pytest loads by itself (importing this package does not import pytest)."""
from __future__ import annotations

from ._server import FakeServer, RecordedRequest
from .fake_gemini import FakeGemini, prompt_tokens
from .fake_openai import FakeOpenAI
from .kernel import KernelProcess
from .script import Match, Prompt, Reply, blocked_reply, call_reply, count_tokens, error_reply, text_reply

__all__ = ["FakeGemini", "FakeOpenAI", "FakeServer", "KernelProcess", "Match", "Prompt", "RecordedRequest", "Reply",
           "blocked_reply", "call_reply", "count_tokens", "error_reply", "prompt_tokens", "text_reply"]
