"""The `ota:` section of the agent's config: where models are kept, when updates may run, and
how a new model must behave before the trap keeps it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UpdateWindow(_Section):
    hours: tuple[int, int] | None = Field(
        None,
        description="local hours [start, end) when an update may start, e.g. [10, 16] around midday"
        " (solar power, animals resting); [22, 4] crosses midnight; omit for any hour",
    )
    min_disk_free_mb: int = Field(
        200, ge=0, description="free space to keep beyond the download and the unpacked bundle"
    )
    max_cpu_temp_c: float | None = Field(
        80.0, description="wait while the CPU is hotter than this (omit to ignore the temperature)"
    )
    require_power_ok: bool = Field(
        True, description="wait while the Pi reports under-voltage (a failing battery or panel)"
    )

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, hours: tuple[int, int] | None) -> tuple[int, int] | None:
        if hours is not None and not all(0 <= h <= 23 for h in hours):
            raise ValueError("hours are 0-23")
        if hours is not None and hours[0] == hours[1]:
            raise ValueError("start and end hour are equal: omit `hours` to allow any hour")
        return hours


class OtaConfig(_Section):
    enabled: bool = Field(True, description="follow the server's model releases (cmd/model)")
    state_dir: Path | None = Field(
        None,
        description="the two model slots, the download in progress and the update state;"
        " default: a `models` folder beside the spool (/var/lib/trapline/models)",
    )
    server_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="base URL for bundle downloads; default: upload.url (the trap's server)",
    )
    window: UpdateWindow = Field(default_factory=UpdateWindow)
    health_window_s: float = Field(
        300.0, gt=0, description="after a switch, the new model is watched this long before it is kept"
    )
    max_slowdown: float = Field(
        3.0, gt=1, description="go back if frames take this many times longer than with the old model"
    )
    max_frame_ms: float | None = Field(
        None, gt=0, description="go back if frames take longer than this on average (omit: no limit)"
    )
    max_trial_crashes: int = Field(
        2, ge=0, description="go back when the agent dies this many times inside the health window"
    )
    retry_min_s: float = Field(30.0, gt=0, description="first wait after a failed download or install")
    retry_max_s: float = Field(3600.0, gt=0, description="longest wait between attempts")
    max_attempts: int = Field(8, ge=1, description="attempts before the trap gives up on a release")
    download_timeout_s: float = Field(60.0, gt=0, description="network timeout of the bundle download")
