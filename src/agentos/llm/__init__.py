"""THINK, the LLM gateway: providers (Gemini, OpenAI-compatible), scheduling, budgets, contexts.

Agents never import the providers: they call THINK through the kernel, which
holds the API key. ``agentos.llm.tools`` is the agent-side helper for function
calling.
"""
from __future__ import annotations

from .config import LLMConfig
from .errors import ErrorKind, LLMError

__all__ = ["ErrorKind", "LLMConfig", "LLMError"]
