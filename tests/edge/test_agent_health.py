"""Credentials and systemd integration, against a real Mosquitto and a real notify socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, MqttCollector, agent_config, write_config
from trapline.cli.broker import MosquittoBroker
from trapline.edge.spool import DetectionSpool

pytestmark = pytest.mark.slow


def _agent(config_path: Path, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "trapline.cli", "edge", "run", "--config", str(config_path)],
            stdout=log_file,
            stderr=log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        )


@pytest.fixture
def secured_broker(tmp_path: Path) -> MosquittoBroker:
    passwords = tmp_path / "passwd"
    passwords.touch(mode=0o600)
    for user, password in (("trap-07", "right-password"), ("collector", "collector-password")):
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
    broker = MosquittoBroker(
        tmp_path / "broker", extra_config=f"allow_anonymous false\npassword_file {passwords}\n"
    )
    return broker.start()


def test_password_from_environment_and_refused_credentials(
    tmp_path: Path, secured_broker: MosquittoBroker
) -> None:
    collector = MqttCollector(secured_broker.port)
    collector.client.username_pw_set("collector", "collector-password")
    collector.client.reconnect()
    source = {"type": "replay", "files": [str(SAMPLES)], "count": 3}
    mqtt = {"host": "127.0.0.1", "port": secured_broker.port, "username": "trap-07", "auth_retry_s": 3600}
    config_path = write_config(tmp_path, agent_config(tmp_path, secured_broker.port, source, mqtt=mqtt))
    try:
        wrong = _agent(config_path, tmp_path / "wrong.log", TRAPLINE_MQTT_PASSWORD="wrong-password")
        log = tmp_path / "wrong.log"
        assert collector.wait_for(lambda: "refused our credentials" in log.read_text(), 60), log.read_text()
        time.sleep(3)  # with backoff 1-2 s it would have retried; it must not
        assert log.read_text().count("refused our credentials") == 1
        assert wrong.poll() is None  # still capturing into the spool
        wrong.terminate()
        assert wrong.wait(30) == 0

        right = _agent(config_path, tmp_path / "right.log", TRAPLINE_MQTT_PASSWORD="right-password")
        assert right.wait(120) == 0, (tmp_path / "right.log").read_text()
        ids = {p["id"] for p in collector.payloads("/detections")}
        installation = DetectionSpool(tmp_path / "state" / "spool.sqlite", 1 << 30).installation_id
        assert ids == {f"trap-07:{installation}:{n:09d}" for n in range(1, 4)}
    finally:
        collector.close()
        secured_broker.stop()


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path, broker: MosquittoBroker) -> None:
    notify_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(notify_path))
    server.settimeout(60)
    source = {"type": "replay", "files": [str(SAMPLES)], "count": 20, "interval_s": 0.1}
    config_path = write_config(tmp_path, agent_config(tmp_path, broker.port, source))
    agent = _agent(
        config_path, tmp_path / "agent.log", NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000"
    )
    received: list[str] = []
    try:
        while "STOPPING=1" not in received:
            received.append(server.recv(256).decode())
    finally:
        server.close()
    assert agent.wait(30) == 0
    assert received[0] == "READY=1"
    assert received.count("WATCHDOG=1") >= 3  # every 0.2 s over a ~2 s run


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def _cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trapline test CA")])
    ca = _cert("trapline test CA", ca_key, ca_name, ca_key, ca=True)
    server = _cert("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_tls_connection_verifies_the_broker(tmp_path: Path) -> None:
    from trapline.cli.broker import free_port

    ca, cert, key = _tls_files(tmp_path)
    tls_port = free_port()
    broker = MosquittoBroker(
        tmp_path / "broker",
        extra_config=f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n",
    ).start()
    try:
        collector = MqttCollector(broker.port)  # plain listener, same broker
        source = {"type": "replay", "files": [str(SAMPLES)], "count": 2}
        mqtt = {"host": "127.0.0.1", "port": tls_port, "tls": {"ca_file": str(ca)}}
        config = write_config(tmp_path, agent_config(tmp_path, tls_port, source, mqtt=mqtt))
        agent = _agent(config, tmp_path / "agent.log")
        assert agent.wait(120) == 0, (tmp_path / "agent.log").read_text()
        assert collector.wait_for(lambda: len(collector.payloads("/detections")) == 2, 10)
        collector.close()
    finally:
        broker.stop()
