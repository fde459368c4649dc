"""Deterministic embedding vectors for the fake servers: the same input always maps to the same vector."""
from __future__ import annotations

import hashlib
import math
import random


def embedding_vector(model: str, text: str, dimensions: int, full: int, *, task: str = "",
                     renormalize: bool = False) -> list[float]:
    """A unit vector of ``full`` numbers seeded by (model, task, text), cut to its first ``dimensions``.

    Cutting keeps a prefix as Matryoshka-trained models do, so a shorter vector
    points the same way as the start of the full one. Gemini returns the cut
    vector as is (only its full size has norm 1); OpenAI scales it back to norm 1
    (``renormalize``).
    """
    seed = hashlib.sha256(f"{model}\0{task}\0{text}".encode()).digest()
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(full)]
    kept = values[:dimensions] if renormalize else values
    norm = math.sqrt(sum(v * v for v in kept)) or 1.0
    return [round(v / norm, 8) for v in values[:dimensions]]
