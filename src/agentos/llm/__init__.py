"""THINK, the LLM gateway: providers (Gemini, OpenAI-compatible), scheduling, budgets, contexts.

Agents never import the providers: they call THINK through the kernel, which
holds the API key. The agent-side helper for function calling is the SDK's
``agentos.client.tools``.
"""
from __future__ import annotations

from .config import LLMConfig
from .errors import ErrorKind, LLMError

__all__ = ["ErrorKind", "LLMConfig", "LLMError"]
