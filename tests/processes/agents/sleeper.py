"""Says READY, then sleeps until killed (default SIGTERM handling: it dies)."""
import time

import agentos

agentos.Client().ready()
print("sleeping", flush=True)
while True:
    time.sleep(60)
