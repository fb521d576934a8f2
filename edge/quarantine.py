"""Bad files go to a quarantine folder with a note saying why, so nothing is silently lost."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

from trapline.edge.sources.base import Frame

log = logging.getLogger(__name__)


class Quarantine:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, frame: Frame, reason: str) -> Path:
        """Move (owned files) or copy the frame's file into quarantine; returns the new path."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        target = self.folder / f"{stamp}_{Path(frame.name).name}"
        if frame.path is not None and frame.path.exists():
            if frame.owned:
                shutil.move(frame.path, target)
            else:
                shutil.copyfile(frame.path, target)
        elif frame.data is not None:
            target.write_bytes(frame.data)
        note = target.with_name(target.name + ".reason.txt")
        note.write_text(f"{frame.name}\n{reason}\n")
        log.warning("quarantined %s: %s (-> %s)", frame.name, reason, target)
        return target
