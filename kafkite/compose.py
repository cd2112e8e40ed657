"""The composition root: builds a broker and wires its parts together, lowest first.

Storage (in ``Broker``), cluster mode (brokers sharing PostgreSQL, handed in before the coordinators), the
group and transaction coordinators, the handlers declared in ``kafkite.broker.apis``, then the wrappers
around them, innermost first: stream pools (names, the OCI profile), ACLs, the doors and the audit trail.
Each wrapper is composed once here; a request costs one dict lookup in ``Broker.handlers``.
"""

from __future__ import annotations

from kafkite.broker import apis, authz, txn
from kafkite.broker.core import Broker, is_postgres
from kafkite.broker.groups import handlers as groups
from kafkite.broker.metrics import register_collectors
from kafkite.config import BrokerConfig
from kafkite.doors import install as install_doors
from kafkite.metrics import BrokerMetrics, enabled
from kafkite.streaming import install as install_streaming


def build_broker(config: BrokerConfig) -> Broker:
    broker = Broker(config)
    if enabled(config):
        broker.metrics = BrokerMetrics()
        register_collectors(broker.metrics, broker)
    if is_postgres(config["storage.engine"]):
        # Imported here only because it needs the optional PostgreSQL driver (psycopg), as the engine does.
        from kafkite import cluster

        cluster.attach(broker)
    groups.attach(broker)
    txn.attach(broker)
    broker.handlers.update(apis.served(broker))
    # Stream pools wrap every handler registered above.
    install_streaming(broker)
    # ACL checks wrap the pool wrappers, so ACLs name topics and groups as clients see them.
    authz.install_authorizer(broker, {key: api.authz for key, api in apis.BY_KEY.items()})
    # The doors' security (refuses an open door beside secured Kafka) and the audit trail, outermost.
    install_doors(broker)
    return broker
