"""Agent processes: SPAWN, KILL, LIST, WAIT, LOGS and READY, and the agent table behind them."""
from .agent import Agent, Status
from .service import ProcessService

__all__ = ["Agent", "ProcessService", "Status"]
