"""The on-trap agent (runs on the Raspberry Pi; never imports torch, ultralytics or the server)."""

__version__ = "0.1.0"
