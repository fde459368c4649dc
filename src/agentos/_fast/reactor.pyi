"""Type stub for the compiled reactor (its twin is agentos.kernel.reactor)."""
from agentos.kernel.reactor import EVENT_READ as EVENT_READ
from agentos.kernel.reactor import EVENT_WRITE as EVENT_WRITE
from agentos.kernel.reactor import Connection as Connection
from agentos.kernel.reactor import ParkingQueue as ParkingQueue
from agentos.kernel.reactor import Reactor as Reactor
