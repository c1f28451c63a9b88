"""Float comparisons that hold on any x86 CPU: bounded relative to the values' scale, plus cosine.

A bound like `max|a - b| < 1e-3` measured on one CPU fails on another (FACTS.md: 8.2e-4 where it
was written, 1.08e-3 on a fresh machine). Different kernels round differently in proportion to
the magnitudes involved, so the bound scales with max|b|.
"""

from __future__ import annotations

import numpy as np


def assert_close(a, b, rel: float = 1e-3, min_cosine: float = 0.9999) -> None:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(float(np.abs(b).max()), 1e-12)
    worst = float(np.abs(a - b).max())
    assert worst <= rel * scale, f"max |a-b| = {worst:.3g} > {rel:g} x max|b| = {rel * scale:.3g}"
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-300))
    assert cos >= min_cosine, f"cosine similarity {cos:.6f} < {min_cosine}"
