"""Group frames from one trigger into a sequence (burst) and summarise each closed sequence.

Frames closer together than `gap_s` share a `sequence_id`. A sequence closes when a frame arrives
after a longer gap, when the trap has been idle for `gap_s`, or at shutdown. Its state is plain
JSON so the agent can save it with every spooled frame and resume after a crash.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime

from trapline.contracts import CategorySummary, Detection, SequenceSummary, as_category


@dataclass
class OpenSequence:
    sequence_id: str
    first_at: str
    last_at: str
    frame_count: int = 0
    max_counts: dict[str, int] = field(default_factory=dict)
    best_conf: dict[str, float] = field(default_factory=dict)
    probability_sums: dict[str, float] = field(default_factory=dict)


@dataclass
class BurstState:
    next_number: int = 1
    open: OpenSequence | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> BurstState:
        if not text:
            return cls()
        raw = json.loads(text)
        seq = raw.get("open")
        return cls(raw["next_number"], OpenSequence(**seq) if seq else None)


class BurstGrouper:
    def __init__(
        self,
        device_id: str,
        gap_s: float,
        categories: tuple[str, ...],
        state: BurstState,
        id_prefix: str | None = None,
    ) -> None:
        self.device_id = device_id
        # "<device>:<installation>": sequence ids stay unique across reinstalls (see DetectionSpool)
        self.id_prefix = id_prefix or device_id
        self.gap_s = gap_s
        self.categories = categories
        self.state = state

    def _summary(self, seq: OpenSequence) -> SequenceSummary:
        return SequenceSummary(
            sequence_id=seq.sequence_id,
            device_id=self.device_id,
            first_frame_at=datetime.fromisoformat(seq.first_at),
            last_frame_at=datetime.fromisoformat(seq.last_at),
            frame_count=seq.frame_count,
            categories={
                category: CategorySummary(max_count=seq.max_counts[name], best_conf=seq.best_conf[name])
                for name in sorted(seq.max_counts)
                if (category := as_category(name)) is not None
            },
            mean_class_probabilities={
                cat: round(seq.probability_sums.get(cat, 0.0) / seq.frame_count, 4) for cat in self.categories
            },
        )

    def close(self) -> SequenceSummary | None:
        """Close the open sequence, if any, and return its summary."""
        seq, self.state.open = self.state.open, None
        return self._summary(seq) if seq is not None else None

    def close_if_idle(self, now: datetime) -> SequenceSummary | None:
        seq = self.state.open
        if seq is not None and (now - datetime.fromisoformat(seq.last_at)).total_seconds() > self.gap_s:
            return self.close()
        return None

    def add(
        self, captured_at: datetime, detections: list[Detection]
    ) -> tuple[str, int, SequenceSummary | None]:
        """Assign a frame to a sequence: (sequence_id, frame_index, summary of a closed one)."""
        closed = None
        seq = self.state.open
        if seq is not None:
            gap = abs((captured_at - datetime.fromisoformat(seq.last_at)).total_seconds())
            if gap > self.gap_s:
                closed = self.close()
                seq = None
        if seq is None:
            number = self.state.next_number
            self.state.next_number += 1
            stamp = captured_at.isoformat()
            seq = OpenSequence(f"{self.id_prefix}:seq:{number:09d}", stamp, stamp)
            self.state.open = seq
        frame_index = seq.frame_count
        seq.frame_count += 1
        seq.last_at = max(seq.last_at, captured_at.isoformat(), key=datetime.fromisoformat)
        counts = Counter(d.category for d in detections)
        for det in detections:
            seq.best_conf[det.category] = max(seq.best_conf.get(det.category, 0.0), det.conf)
        for cat, count in counts.items():
            seq.max_counts[cat] = max(seq.max_counts.get(cat, 0), count)
            best_here = max(d.conf for d in detections if d.category == cat)
            seq.probability_sums[cat] = seq.probability_sums.get(cat, 0.0) + best_here
        return seq.sequence_id, frame_index, closed
