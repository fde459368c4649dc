"""Says READY, then spins on the CPU until killed: a paused agent's CPU usage must stop growing."""
import agentos

agentos.Client().ready()
print("spinning", flush=True)
while True:
    pass
