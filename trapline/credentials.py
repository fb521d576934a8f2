"""Secrets (passwords, tokens) for every part, read one way: never from a config file.

Where a secret may come from, first found wins:
1. the environment variable itself (`TRAPLINE_MQTT_PASSWORD=...`);
2. a file named in the config (`password_file: /etc/trapline/mqtt-password`, mode 0600);
3. a file named by the variable with `_FILE` appended (`TRAPLINE_MQTT_PASSWORD_FILE=...`, as
   container secrets are handed over);
4. a systemd credential, `$CREDENTIALS_DIRECTORY/<name>` (`LoadCredential=<name>:/etc/...`).

Values come back as `SecretStr`, so they never show in a repr, a log line or a settings dump.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"  # set by systemd for LoadCredential=


class SecretError(ValueError):
    """A secret's file was named but cannot be read; the message says which file."""


def _read(path: Path, what: str) -> SecretStr:
    try:
        # one trailing newline is what `echo secret > file` leaves; it is not part of the secret
        return SecretStr(path.read_text().rstrip("\r\n"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"cannot read {what} from {path}: {exc}") from exc


def read_secret(env: str, credential: str, file: Path | None = None) -> SecretStr | None:
    """The secret called `env` (environment) / `credential` (systemd), or None when nowhere."""
    if value := os.environ.get(env):
        return SecretStr(value)
    if file is not None:
        return _read(file, env)
    if named := os.environ.get(f"{env}_FILE"):
        return _read(Path(named), env)
    folder = os.environ.get(CREDENTIALS_DIRECTORY)
    if folder and (Path(folder) / credential).is_file():
        return _read(Path(folder) / credential, env)
    return None


def reveal(secret: SecretStr | None) -> str | None:
    """The plain value, at the one place it is handed to a library (MQTT client, HTTP header)."""
    return secret.get_secret_value() if secret is not None else None
