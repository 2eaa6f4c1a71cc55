"""Files read at start: a secret (password, token) and a TLS table, for any client or server.

Shared by every connection-based plugin (MQTT today; HTTP, AMQP, Kafka and the
collector's MQTT receiver next) so they take one vocabulary: `password_file` (or
an environment variable, or a systemd credential) and a `[... .tls]` table with
`ca_file`, `cert_file`, `key_file`, `insecure`. A secret is read once at start,
never logged, and never printed by `check-config`. Part of `config/`, a leaf:
agent and collector modules may both import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, boolean, option, string
from fleetbeat.errors import ConfigError

PATH = "a file path"
# Where an MQTT password comes from besides password_file: the agent's and the collector's
MQTT_PASSWORD_ENV = "FLEETBEAT_MQTT_PASSWORD"  # noqa: S105 - a variable name
MQTT_CREDENTIAL = "mqtt-password"  # systemd LoadCredential= name, see systemd/


@dataclass(frozen=True)
class TlsConfig:
    """A `[... .tls]` table: present (even empty) means TLS, checked against the system CAs."""

    ca_file: Optional[str] = option(None, string(what=PATH))
    cert_file: Optional[str] = option(None, string(what=PATH))
    key_file: Optional[str] = option(None, string(what=PATH))
    insecure: bool = option(False, boolean())

    def check(self, path: str, problems: Problems) -> None:
        if self.key_file and not self.cert_file:
            problems.add(f"{path}.key_file", "needs cert_file (the certificate it belongs to)")

    def check_files(self, path: str, problems: Problems) -> None:
        for key in ("ca_file", "cert_file", "key_file"):
            check_readable(getattr(self, key), f"{path}.{key}", problems)


def set_tls(client: Any, tls: TlsConfig) -> None:
    """TLS on a paho MQTT client, the one way every fleetbeat connection uses it.

    The peer's certificate is checked (against `ca_file`, else the system CAs), and
    its host name unless `insecure`. OSError or ValueError for files that cannot be
    loaded: the caller names its key in the error.
    """
    import ssl  # only for a TLS connection: it costs memory on a Pi Zero

    client.tls_set(
        ca_certs=tls.ca_file,
        certfile=tls.cert_file,
        keyfile=tls.key_file,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    client.tls_insecure_set(tls.insecure)


def check_readable(file: Optional[str], path: str, problems: Problems) -> None:
    """A file read at start: found and readable now (check-config says so)."""
    if file is None:
        return
    if not os.path.isfile(file):
        problems.add(path, f'expected a readable file, got "{file}" (no such file)')
    elif not os.access(file, os.R_OK):
        problems.add(path, f'expected a readable file, got "{file}" (permission denied)')


def read_secret(
    file: Optional[str],
    *,
    env_var: str,
    credential: str,
    name: str,
    environ: Mapping[str, str],
) -> Optional[str]:
    """The secret from `file`, else `$env_var`, else `$CREDENTIALS_DIRECTORY/credential`; or None.

    `name` (the plugin's log name) starts any error. An empty file is an error,
    except an empty systemd credential: `install.sh` creates it empty, unset.
    """
    path = file
    key = "password_file"
    if path is None:
        if env_var in environ:
            return environ[env_var]
        cred_dir = environ.get("CREDENTIALS_DIRECTORY")
        if not cred_dir or not os.path.exists(os.path.join(cred_dir, credential)):
            return None
        path = os.path.join(cred_dir, credential)
        key = "systemd credential"
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read()
    except OSError as exc:
        raise ConfigError([f'{name}: {key}: cannot read "{path}": {exc.strerror or exc}']) from None
    except UnicodeDecodeError:
        raise ConfigError([f'{name}: {key}: "{path}" is not UTF-8 text']) from None
    secret = secret.rstrip("\r\n")  # editors add a final newline; it is not part of it
    if not secret:
        if file is None:
            return None
        raise ConfigError([f'{name}: {key}: "{path}" is empty'])
    return secret
