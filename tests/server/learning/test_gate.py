"""The gate alone: not worse passes, worse on any gated metric fails, unmeasured metrics are not gated."""

from __future__ import annotations

from trapline.server.learning.gate import judge


def report(ap50: float, accuracy: float, fp_rate: float | None = None) -> dict[str, object]:
    values: dict[str, object] = {
        "per_class": {"animal": {"ap50": ap50, "f1": ap50}},
        "image_accuracy": accuracy,
    }
    if fp_rate is not None:
        values["empty_false_positive_rate"] = fp_rate
    return values


def test_not_worse_is_accepted_and_worse_is_refused() -> None:
    assert judge(report(0.7, 0.9), report(0.7, 0.9), 0.0).accepted
    assert judge(report(0.7, 0.9), report(0.75, 0.95), 0.0).accepted
    worse = judge(report(0.7, 0.9), report(0.72, 0.85), 0.0)
    assert not worse.accepted and "image-level" in worse.reason
    assert judge(report(0.7, 0.9), report(0.69, 0.9), 0.02).accepted  # within tolerance


def test_lower_is_better_metrics_and_missing_ones() -> None:
    assert not judge(report(0.7, 0.9, 0.1), report(0.7, 0.9, 0.2), 0.0).accepted
    checks = judge(report(0.7, 0.9, 0.1), report(0.7, 0.9), 0.0).checks
    assert "empty-frame false-positive rate" not in {c.metric for c in checks}
    assert not judge({}, {}, 0.0).accepted
