"""Type stub for the compiled reactor (its twin is agentos.kernel.reactor)."""
from agentos.kernel.reactor import Connection as Connection, Reactor as Reactor
from agentos.kernel.reactor import EVENT_READ as EVENT_READ, EVENT_WRITE as EVENT_WRITE
