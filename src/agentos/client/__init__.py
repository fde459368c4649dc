"""The agentos SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio)."""
from __future__ import annotations

from .aio import AsyncClient
from .sync import Client

__all__ = ["Client", "AsyncClient"]
