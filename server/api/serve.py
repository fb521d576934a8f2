"""Serve the app with uvicorn and tell systemd how it is doing (Type=notify, WatchdogSec=).

READY=1 once the socket listens; WATCHDOG=1 from a task on the event loop itself, so a loop
blocked by CPU work (or dead) stops feeding the watchdog and systemd restarts the API.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

import uvicorn
from fastapi import FastAPI

from trapline.edge.health import sd_notify, watchdog_interval_s

log = logging.getLogger(__name__)


class NotifyingServer(uvicorn.Server):
    _watchdog: asyncio.Task[None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.should_exit:  # could not bind, or startup failed
            return
        sd_notify("READY=1")
        interval = watchdog_interval_s()
        if interval is not None:
            self._watchdog = asyncio.create_task(self._feed(interval))

    async def _feed(self, interval: float) -> None:
        while not self.should_exit:
            sd_notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def shutdown(self, sockets: Any = None) -> None:
        sd_notify("STOPPING=1")
        if self._watchdog is not None:
            self._watchdog.cancel()
            with suppress(asyncio.CancelledError):
                await self._watchdog
        await super().shutdown(sockets)


def serve(app: FastAPI, host: str, port: int) -> int:
    server = NotifyingServer(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    server.run()
    # uvicorn exits 3 itself when it cannot start (e.g. the port is taken); otherwise a clean stop
    return 0 if server.started else 3
