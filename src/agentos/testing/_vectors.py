"""Deterministic embedding vectors for the fake servers: the same input always maps to the same vector."""
from __future__ import annotations

import hashlib
import math
import random


def embedding_vector(model: str, text: str, dimensions: int, full: int, task: str = "") -> list[float]:
    """A unit vector of ``full`` numbers seeded by (model, task, text), cut to its first ``dimensions``.

    Cutting keeps a prefix as Matryoshka-trained models do, so a shorter vector is
    a prefix of the full one; only the full-size vector has norm 1 (Gemini's
    documented behaviour: callers normalise shorter ones).
    """
    seed = hashlib.sha256(f"{model}\0{task}\0{text}".encode()).digest()
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(full)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 8) for v in values[:dimensions]]
