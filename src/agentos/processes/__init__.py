"""Agent processes: SPAWN, KILL, LIST, WAIT, LOGS and READY, and the agent table behind them."""
from ..protocol.lifecycle import Status
from .agent import Agent
from .service import ProcessService

__all__ = ["Agent", "ProcessService", "Status"]
