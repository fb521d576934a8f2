"""The not-worse gate: a candidate is registered only if, on the same fixed test split, it is not
worse than the current model on any gated metric by more than the tolerance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

Reader = Callable[[dict[str, Any]], Any]

# metric -> (how to read it from an evaluation report, higher is better)
GATED: dict[str, tuple[Reader, bool]] = {
    "animal AP50": (lambda r: r.get("per_class", {}).get("animal", {}).get("ap50"), True),
    "image-level animal/empty accuracy": (lambda r: r.get("image_accuracy"), True),
    "animal F1": (lambda r: r.get("per_class", {}).get("animal", {}).get("f1"), True),
    "empty-frame false-positive rate": (lambda r: r.get("empty_false_positive_rate"), False),
}


@dataclass
class GateCheck:
    metric: str
    current: float
    candidate: float
    higher_is_better: bool
    passed: bool


@dataclass
class GateVerdict:
    accepted: bool
    tolerance: float
    checks: list[GateCheck]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None  # NaN is not a number


def judge(current: dict[str, Any], candidate: dict[str, Any], tolerance: float) -> GateVerdict:
    checks = []
    for metric, (read, higher) in GATED.items():
        old, new = _number(read(current)), _number(read(candidate))
        if old is None or new is None:
            continue  # not measured on this split (e.g. no empty frames): not gated
        passed = new >= old - tolerance if higher else new <= old + tolerance
        checks.append(GateCheck(metric, round(old, 4), round(new, 4), higher, passed))
    if not checks:
        return GateVerdict(False, tolerance, checks, "no gated metric could be measured on the test split")
    failed = [c for c in checks if not c.passed]
    reason = (
        "not worse on " + ", ".join(c.metric for c in checks)
        if not failed
        else "worse on " + ", ".join(f"{c.metric} ({c.candidate} vs {c.current})" for c in failed)
    )
    return GateVerdict(not failed, tolerance, checks, reason)
