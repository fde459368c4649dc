"""Says READY and prints its host name, then sleeps until killed."""
import os
import time

import agentos

agentos.Client().ready()
print(f"up as pid {os.getpid()}", flush=True)
while True:
    time.sleep(60)
