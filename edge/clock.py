"""Is the trap's clock set? A Raspberry Pi has no real-time clock: until NTP answers it reads 1970
(or whatever a previous boot saved). Frames processed then carry timestamps nobody should trust.

The test is deliberately simple and checkable: a time before this agent existed cannot be real.
The kernel's own "synchronised" flag is no help here: it is also unset on a trap that is offline
for a day after a good sync, and in most virtual machines.
"""

from __future__ import annotations

from datetime import UTC, datetime

# no trap ran this agent before this date: a clock reading earlier has not been set
EARLIEST_PLAUSIBLE = datetime(2025, 1, 1, tzinfo=UTC)


def clock_unsynced(captured_at: datetime, now: datetime) -> bool:
    """True when the trap's clock (`now`) or the capture time cannot be real."""
    return now < EARLIEST_PLAUSIBLE or captured_at < EARLIEST_PLAUSIBLE
