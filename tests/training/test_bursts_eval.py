from __future__ import annotations

from trapline.contracts import Detection
from trapline.training.bursts_eval import Burst, summarise


def _det(conf: float) -> Detection:
    return Detection(category="animal", conf=conf, bbox=(0.1, 0.1, 0.2, 0.2))


def test_smoothing_removes_lone_low_false_alarms_and_counts_what_it_costs() -> None:
    bursts = [
        Burst("glare", "val", "s", False, "labels", [[], [_det(0.35)], []]),
        Burst("deer", "val", "s", True, "labels", [[_det(0.4)], [_det(0.45)], [_det(0.9)]]),
        Burst("shy", "val", "s", True, "labels", [[], [_det(0.38)], []]),  # a real animal, seen once
    ]
    off, on = summarise(bursts, 0.0), summarise(bursts, 0.5)
    assert (off["false_alarms"], off["missed"], off["demoted"]) == (1, 0, 0)
    assert (on["false_alarms"], on["missed"], on["demoted"]) == (0, 1, 2)
    assert on["accuracy"] == off["accuracy"] == 2 / 3
