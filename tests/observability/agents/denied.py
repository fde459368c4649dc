"""Tries to spawn without the spawn capability (a permission_denied the metrics count), then exits."""
import agentos

with agentos.Client() as kernel:
    try:
        kernel.spawn("never", command=["true"])
    except agentos.PermissionDenied:
        print("denied", flush=True)
