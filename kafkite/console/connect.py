"""A stream pool's Kafka connection settings, as OCI's console shows them, ready to paste into a client.

A Kafka client reaches a pool other than the default one through SASL/PLAIN with the user name
``<tenancy>/<user>/<pool OCID>`` (the pool's OCID picks the pool; the password is checked for
``<tenancy>/<user>``, see ``kafkite.broker.sasl``), so the settings name the broker's SASL listener, the
PLAIN mechanism and that user name template. The default pool is also reached without SASL.
"""

from __future__ import annotations

from typing import Any, TypedDict

from kafkite.broker.core import Broker
from kafkite.streaming.pools import StreamPool

USER_PLACEHOLDER = "<tenancy>/<user>"
PASSWORD_PLACEHOLDER = "<password>"


class Listener(TypedDict):
    name: str
    bootstrap_servers: str
    security_protocol: str


def _listeners(broker: Broker) -> list[Listener]:
    """Every advertised Kafka listener with its security protocol."""
    protocols: dict[str, str] = broker.config["listener.security.protocol.map"]
    out: list[Listener] = []
    for name, host, port in broker.config["advertised.listeners"]:
        proto = protocols.get(name.upper(), name.upper())
        out.append(Listener(name=name, bootstrap_servers=f"{host}:{port}", security_protocol=proto))
    return out


def connection_settings(broker: Broker, pool: StreamPool) -> dict[str, Any]:
    """What a Kafka client needs to produce to and consume from ``pool``."""
    listeners = _listeners(broker)
    sasl = [x for x in listeners if x["security_protocol"] in ("SASL_SSL", "SASL_PLAINTEXT")]
    sasl.sort(key=lambda x: x["security_protocol"] != "SASL_SSL")  # TLS first, as OCI offers it
    mechanisms = [str(m).upper() for m in broker.config["sasl.enabled.mechanisms"]]
    notes: list[str] = []
    chosen: Listener | None = sasl[0] if sasl else None
    if chosen is None:
        if pool.is_default and listeners:
            chosen = listeners[0]
            notes.append(
                "the broker has no SASL listener: Kafka clients reach the default pool only, without "
                "a user name"
            )
        else:
            notes.append(
                "the broker has no SASL listener, and only a SASL/PLAIN user name can pick this pool: add a "
                "SASL_PLAINTEXT or SASL_SSL listener to listeners"
            )
    elif "PLAIN" not in mechanisms:
        notes.append("SASL/PLAIN is not in sasl.enabled.mechanisms: the pool's user name needs it")
    settings: dict[str, str] = {}
    username = f"{USER_PLACEHOLDER}/{pool.id}"
    if chosen is not None:
        settings["bootstrap.servers"] = chosen["bootstrap_servers"]
        settings["security.protocol"] = chosen["security_protocol"]
        if chosen["security_protocol"].startswith("SASL"):
            settings["sasl.mechanism"] = "PLAIN"
            settings["sasl.username"] = username
            settings["sasl.password"] = PASSWORD_PLACEHOLDER
        if chosen["security_protocol"].endswith("SSL"):
            settings["ssl.ca.location"] = "<CA certificate of the broker (PEM)>"
    jaas = (
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="'
        f'{username}" password="{PASSWORD_PLACEHOLDER}";'
    )
    properties = "".join(f"{k}={v}\n" for k, v in settings.items())
    java = {k: v for k, v in settings.items() if not k.startswith("sasl.user") and k != "sasl.password"}
    if "sasl.mechanism" in java:
        java["sasl.jaas.config"] = jaas
    if "ssl.ca.location" in java:
        del java["ssl.ca.location"]
        java["ssl.truststore.location"] = "<truststore with the broker's CA>"
    return {
        "pool_id": pool.id,
        "pool_name": pool.name,
        "default_pool": bool(pool.is_default),
        "bootstrap_servers": settings.get("bootstrap.servers"),
        "security_protocol": settings.get("security.protocol"),
        "sasl_mechanism": settings.get("sasl.mechanism"),
        "username_template": username,
        "password_hint": (
            "the password of <tenancy>/<user> in sasl.plain.users or the broker's user store "
            "(kafkite user add)"
        ),
        "properties": properties,  # librdkafka / confluent-kafka, kcat -F
        "java_properties": "".join(f"{k}={v}\n" for k, v in java.items()),
        "sasl_jaas_config": jaas,
        "listeners": listeners,
        "notes": notes,
    }
