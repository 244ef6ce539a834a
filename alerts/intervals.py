"""Confidence intervals for rates and their differences: what canary analysis, the release gate and
the console's judgements rest on. Pure."""

from __future__ import annotations

import math

__all__ = ["Z_95", "rate_difference", "wilson"]

Z_95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n; (0, 1) when there is nothing to go on."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z_95) -> tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid score interval (method 10): well behaved for the small
    rates and unequal sizes of a canary. Returns (difference, low, high)."""
    p1, p2 = (k1 / n1 if n1 else 0.0), (k2 / n2 if n2 else 0.0)
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, low), min(1.0, high)
