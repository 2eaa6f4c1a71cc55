"""What the Kafka producer (agent) and consumer (collector) share: brokers, security, the client.

One vocabulary on both sides: `brokers = ["host:port", ...]`, `topic_prefix`
(topics `{prefix}.hb` and `{prefix}.rd`) and a `[... .security]` table whose
password comes from `password_file`, else `$FLEETBEAT_KAFKA_PASSWORD`, else the
systemd credential `kafka-password` (`config.secrets.read_secret`).

The client is confluent-kafka (librdkafka), the optional extra `fleetbeat[kafka]`;
on 32-bit ARM (no wheels) Debian / Raspberry Pi OS's `python3-confluent-kafka`.
It is imported only by `load_client()`, when a Kafka table is configured: the
import alone costs about 6 MiB of RSS. Part of `config/`, a leaf.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, array, option, string
from fleetbeat.config.secrets import PATH, check_readable, read_secret
from fleetbeat.errors import ConfigError

PASSWORD_ENV = "FLEETBEAT_KAFKA_PASSWORD"  # noqa: S105 - a variable name
CREDENTIAL_NAME = "kafka-password"  # systemd LoadCredential= name
BROKER = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}"
TOPIC_PREFIX = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}"  # Kafka topic names, minus the suffix
MISSING_CLIENT = (
    'the Kafka client is not installed: pip install "fleetbeat[kafka]" '
    "(on 32-bit ARM: apt install python3-confluent-kafka)"
)


def brokers_option() -> Any:
    """`brokers = ["host:port", ...]`: at least one, default a broker on loopback."""
    return option(
        ("127.0.0.1:9092",),
        array(string(pattern=BROKER, what='"host:port" (an IPv6 address in [])'), min_len=1),
    )


def topic_prefix_option() -> Any:
    return option(
        "fleetbeat", string(pattern=TOPIC_PREFIX, what="a topic name prefix of A-Z a-z 0-9 . _ -")
    )


@dataclass(frozen=True)
class KafkaSecurity:
    """A `[... .security]` table: librdkafka's security.protocol, SASL and a CA bundle."""

    security_protocol: str = option(
        "plaintext", string(choices=("plaintext", "ssl", "sasl_plaintext", "sasl_ssl"))
    )
    sasl_mechanism: str = option(
        "PLAIN", string(choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
    )
    username: Optional[str] = option(None, string(what="a user name"))
    password_file: Optional[str] = option(None, string(what=PATH))
    ca_file: Optional[str] = option(None, string(what=PATH))

    def check(self, path: str, problems: Problems) -> None:
        sasl = self.security_protocol.startswith("sasl")
        if sasl and self.username is None:
            problems.add(f"{path}.username", f'needed by "{self.security_protocol}"')
        if not sasl and (self.username is not None or self.password_file is not None):
            problems.add(f"{path}.security_protocol", '"sasl_plaintext" or "sasl_ssl" for SASL')
        if self.ca_file is not None and not self.security_protocol.endswith("ssl"):
            problems.add(f"{path}.ca_file", 'needs security_protocol "ssl" or "sasl_ssl"')

    def check_files(self, path: str, problems: Problems) -> None:
        check_readable(self.password_file, f"{path}.password_file", problems)
        check_readable(self.ca_file, f"{path}.ca_file", problems)


def client_settings(
    brokers: tuple[str, ...],
    security: Optional[KafkaSecurity],
    *,
    name: str,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """librdkafka settings for the brokers and security; the password is read here, once."""
    settings: dict[str, Any] = {"bootstrap.servers": ",".join(brokers)}
    if security is None:
        return settings
    settings["security.protocol"] = security.security_protocol
    if security.ca_file is not None:
        settings["ssl.ca.location"] = security.ca_file
    if security.security_protocol.startswith("sasl"):
        password = read_secret(security.password_file, env_var=PASSWORD_ENV,
                               credential=CREDENTIAL_NAME, name=name, environ=environ)  # fmt: skip
        settings["sasl.mechanism"] = security.sasl_mechanism
        settings["sasl.username"] = security.username
        settings["sasl.password"] = password or ""
    return settings


class DebugLog:
    """librdkafka's own log lines (its `logger`), at debug level: every failed reconnect is
    an error line there; the client's `error_cb` reports what matters, rate-limited."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self._logger.debug(fmt, *args)


def client_missing() -> Optional[str]:
    """Why the Kafka client cannot be loaded (the extra to install), or None; imports nothing."""
    return MISSING_CLIENT if importlib.util.find_spec("confluent_kafka") is None else None


def check_client(path: str, problems: Problems) -> None:
    """A Kafka table needs the client: its absence is a config error naming the extra."""
    missing = client_missing()
    if missing is not None:
        problems.add(path, missing)


def load_client(name: str) -> Any:
    """The client's classes (Producer, Consumer, KafkaError...), loaded now; a config error
    when it is missing.

    The compiled module `confluent_kafka.cimpl` holds them all; it is loaded without the
    package's `__init__`, which imports asyncio, ssl and concurrent.futures for its
    serializers and admin client: 7.2 MiB of RSS measured, a quarter of the agent's
    budget. Registered under its own name, so a later `import confluent_kafka` reuses it.
    """
    found = sys.modules.get("confluent_kafka.cimpl")
    if found is not None:
        return found
    spec = importlib.util.find_spec("confluent_kafka")  # finds the package, runs nothing
    if spec is None:
        raise ConfigError([f"{name}: {MISSING_CLIENT}"])
    try:
        return _load_cimpl(spec.submodule_search_locations or [])
    except (ImportError, OSError, StopIteration):  # another layout (a distribution's build)
        try:
            import confluent_kafka
        except ImportError:
            raise ConfigError([f"{name}: {MISSING_CLIENT}"]) from None
        return confluent_kafka


def _load_cimpl(locations: Iterable[str]) -> Any:
    import importlib.machinery

    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    path = next(os.path.join(d, f) for d in locations for f in sorted(os.listdir(d))
                if f.startswith("cimpl.") and f.endswith(suffixes))  # fmt: skip
    loader = importlib.machinery.ExtensionFileLoader("confluent_kafka.cimpl", path)
    spec = importlib.util.spec_from_loader("confluent_kafka.cimpl", loader)
    if spec is None:
        raise ImportError("no spec for confluent_kafka.cimpl")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules["confluent_kafka.cimpl"] = module
    return module
