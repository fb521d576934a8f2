"""`trapline server ...` commands and settings as an operator meets them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from trapline.cli.broker import MosquittoBroker
from trapline.cli.main import main
from trapline.server.core.config import ServerSettings
from trapline.server.migrate import upgrade


@pytest.mark.parametrize("bad", ["trap:07", "trap-07\nevil:$7$x", "../trap", "", "_trap", "t" * 65])
def test_device_add_refuses_ids_that_break_topics_or_the_password_file(
    bad: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRAPLINE_SERVER_DATABASE_URL", sqlite_url)
    assert main(["server", "device", "add", bad]) == 2
    assert "invalid device id" in capsys.readouterr().err
    with create_engine(sqlite_url).connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM devices")).scalar() == 0
    assert main(["server", "device", "add", "trap-07.b_2", "--credentials"]) == 0
    assert "MQTT user trap-07.b_2" in capsys.readouterr().out


def test_default_paths_are_absolute_and_follow_systemds_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAPLINE_SERVER_DATA_DIR", raising=False)
    monkeypatch.delenv("TRAPLINE_SERVER_DATABASE_URL", raising=False)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/trapline")  # what StateDirectory=trapline sets
    settings = ServerSettings()
    assert settings.data_dir == Path("/var/lib/trapline")
    assert settings.database_url == "sqlite:////var/lib/trapline/trapline.sqlite"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert ServerSettings().data_dir == Path("/var/lib/trapline")
    monkeypatch.chdir(tmp_path)
    relative = ServerSettings(data_dir=Path("data"), database_url="sqlite:///db/x.sqlite")
    assert relative.data_dir == tmp_path / "data"
    assert relative.database_url == f"sqlite:///{tmp_path}/db/x.sqlite"
    with pytest.raises(ValueError, match="ingest_receive_maximum"):
        ServerSettings(ingest_batch_size=500, ingest_receive_maximum=100)


def test_ingest_tells_systemd_it_is_ready_alive_and_stopping(tmp_path: Path, broker: MosquittoBroker) -> None:
    url = f"sqlite:///{tmp_path / 'trapline.sqlite'}"
    upgrade(url)
    heard: list[str] = []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(1)

    def listen() -> None:
        while True:
            try:
                heard.append(sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    threading.Thread(target=listen, daemon=True).start()
    env = {
        **os.environ,
        "TRAPLINE_SERVER_DATABASE_URL": url,
        "TRAPLINE_SERVER_DATA_DIR": str(tmp_path / "data"),
        "TRAPLINE_SERVER_MQTT_HOST": "127.0.0.1",
        "TRAPLINE_SERVER_MQTT_PORT": str(broker.port),
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "1000000",
    }
    process = subprocess.Popen([sys.executable, "-m", "trapline.cli", "server", "ingest"], env=env)
    try:
        deadline = time.monotonic() + 30
        while (
            heard.count("WATCHDOG=1") < 2 or "STATUS=subscribed" not in heard
        ) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    time.sleep(0.3)
    sock.close()
    assert heard[0].startswith("READY=1")
    assert "STATUS=subscribed" in heard
    assert heard.count("WATCHDOG=1") >= 2
    assert heard[-1] == "STOPPING=1"
