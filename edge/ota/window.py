"""When an update may start: the configured hours, enough disk, a cool CPU and good power."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from trapline.edge.health import cpu_temp_c, disk_free_bytes
from trapline.edge.ota.config import UpdateWindow

log = logging.getLogger(__name__)

_HWMON = Path("/sys/class/hwmon")


def under_voltage() -> bool | None:
    """True while a Raspberry Pi's firmware flags under-voltage (hwmon `rpi_volt`); None elsewhere."""
    try:
        for sensor in _HWMON.iterdir():
            if (sensor / "name").read_text().strip() == "rpi_volt":
                return (sensor / "in0_lcrit_alarm").read_text().strip() == "1"
    except OSError:
        return None
    return None


def in_hours(hours: tuple[int, int] | None, now: datetime) -> bool:
    if hours is None:
        return True
    start, end = hours
    if start < end:
        return start <= now.hour < end
    return now.hour >= start or now.hour < end  # the window crosses midnight


def why_not_now(
    window: UpdateWindow,
    now: datetime,
    disk_free: int | None,
    needed_bytes: int,
    cpu_temp: float | None,
    low_power: bool | None,
) -> str | None:
    """Why an update must wait (None: it may start now). Unknown readings do not hold it up."""
    if not in_hours(window.hours, now):
        start, end = window.hours or (0, 0)
        return f"outside the update hours {start:02d}:00-{end:02d}:00 (now {now:%H:%M})"
    margin = window.min_disk_free_mb * 1024 * 1024
    if disk_free is not None and disk_free < needed_bytes + margin:
        return (
            f"not enough disk: {disk_free // 2**20} MB free, the update needs"
            f" {(needed_bytes + margin) // 2**20} MB"
        )
    if window.max_cpu_temp_c is not None and cpu_temp is not None and cpu_temp > window.max_cpu_temp_c:
        return f"CPU at {cpu_temp:.0f} °C, above {window.max_cpu_temp_c:.0f} °C"
    if window.require_power_ok and low_power:
        return "the power supply reports under-voltage"
    return None


def current_reason(window: UpdateWindow, state_dir: Path, needed_bytes: int) -> str | None:
    """`why_not_now` with this trap's clock and readings."""
    return why_not_now(
        window,
        datetime.now().astimezone(),
        disk_free_bytes(state_dir),
        needed_bytes,
        cpu_temp_c(),
        under_voltage(),
    )
