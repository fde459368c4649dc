"""Writes 16 MiB of numbered 64 KiB lines to its output as fast as it can, then its last line."""
import sys

filler = "x" * (64 * 1024 - 16)
for i in range(256):
    sys.stdout.write(f"{i:08d} {filler}\n")
print("flood done", flush=True)
