"""Group frames from one trigger into a sequence (burst) and summarise each closed sequence.

Frames closer together than `gap_s` share a `sequence_id`. A sequence closes when a frame arrives
after a longer gap, when the trap has been idle for `gap_s`, or at shutdown. Its state is plain
JSON so the agent can save it with every spooled frame and resume after a crash.

Smoothing: a category detected in only one frame of a burst of two or more, never above
`lone_min_conf`, is demoted - left out of the summary's categories - as flash glare or a tuft of
grass caught in one frame is, while an animal walking through shows in several frames or with high
confidence. The per-frame detection messages are not changed. (The check is per category, not per
box: a lone low box beside a real animal of the same category still counts in `max_count`.)
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
    frames_with: dict[str, int] = field(default_factory=dict)  # frames in which each category shows


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
        lone_min_conf: float = 0.0,
        id_prefix: str | None = None,
    ) -> None:
        self.device_id = device_id
        # "<device>:<installation>": sequence ids stay unique across reinstalls (see DetectionSpool)
        self.id_prefix = id_prefix or device_id
        self.gap_s = gap_s
        self.categories = categories
        self.state = state
        self.lone_min_conf = lone_min_conf

    def demoted(self, seq: OpenSequence) -> set[str]:
        """Categories whose only evidence is one low-confidence frame of a multi-frame burst."""
        if seq.frame_count < 2:
            return set()
        return {
            name
            for name, frames in seq.frames_with.items()
            if frames == 1 and seq.best_conf.get(name, 0.0) < self.lone_min_conf
        }

    def _summary(self, seq: OpenSequence) -> SequenceSummary:
        demoted = self.demoted(seq)
        return SequenceSummary(
            sequence_id=seq.sequence_id,
            device_id=self.device_id,
            first_frame_at=datetime.fromisoformat(seq.first_at),
            last_frame_at=datetime.fromisoformat(seq.last_at),
            frame_count=seq.frame_count,
            categories={
                category: CategorySummary(max_count=seq.max_counts[name], best_conf=seq.best_conf[name])
                for name in sorted(seq.max_counts)
                if (category := as_category(name)) is not None and name not in demoted
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
            seq.frames_with[cat] = seq.frames_with.get(cat, 0) + 1
        return seq.sequence_id, frame_index, closed
