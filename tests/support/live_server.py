"""The real API on loopback (uvicorn in a thread): for clients that speak HTTP, like a trap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from trapline.cli.broker import free_port
from trapline.server.api.main import create_app
from trapline.server.core.config import ServerSettings


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` at http://127.0.0.1:<free port> until the block ends; yields the URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError("the API did not start within 30 s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def live_server(settings: ServerSettings) -> Iterator[str]:
    """A new app for `settings`, served as `serving` does; its engine disposed of at the end."""
    app = create_app(settings)
    try:
        with serving(app) as url:
            yield url
    finally:
        app.state.engine.dispose()
