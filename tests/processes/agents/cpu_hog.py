"""Spins on the CPU forever."""
import agentos

agentos.Client().ready()
while True:
    pass
