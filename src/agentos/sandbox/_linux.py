"""The compiled Linux layer (``agentos._fast.linux``), loaded in one place.

It has no pure-Python twin: without it nothing here can isolate an agent, so the
import fails loudly instead of degrading (``AGENTOS_NO_EXTENSIONS`` does not apply).
"""
from agentos._extensions import load_required

linux = load_required("linux")
