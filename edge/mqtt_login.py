"""How the trap's MQTT connections (the publisher's and the command link's) log in: its user and
password, and TLS with the broker's CA (and a client certificate where the broker wants one)."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt

from trapline.credentials import reveal
from trapline.edge.config import MqttConfig


def apply_login(client: mqtt.Client, cfg: MqttConfig) -> None:
    if cfg.username:
        client.username_pw_set(cfg.username, reveal(cfg.password()))
    if cfg.tls is not None:
        client.tls_set(
            ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
            certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
            keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(cfg.tls.insecure)
