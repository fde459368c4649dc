"""Prints {"listening": true}, then {"n": N} for each message received, until killed."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos

with agentos.Client() as client:
    emit(listening=True)
    while True:
        emit(n=client.recv(ack=True)["body"]["n"])
