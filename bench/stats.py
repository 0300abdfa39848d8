"""Summaries of latency samples (milliseconds): n, mean, min, max and the p50/p95 percentiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import fmean


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); ``fraction`` in [0, 1]."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p95: float
    mean: float
    min: float
    max: float
    p99: float = 0.0

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary | None:
        if not samples:
            return None
        return cls(
            n=len(samples),
            p50=percentile(samples, 0.50),
            p95=percentile(samples, 0.95),
            mean=fmean(samples),
            min=min(samples),
            max=max(samples),
            p99=percentile(samples, 0.99),
        )

    def as_dict(self) -> dict[str, float]:
        return {key: round(value, 2) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Ratio:
    p50: float
    p95: float

    @classmethod
    def of(cls, numerator: Summary | None, denominator: Summary | None) -> Ratio | None:
        if numerator is None or denominator is None or not denominator.p50 or not denominator.p95:
            return None
        return cls(numerator.p50 / denominator.p50, numerator.p95 / denominator.p95)

    def as_dict(self) -> dict[str, float]:
        return {"p50": round(self.p50, 3), "p95": round(self.p95, 3)}
