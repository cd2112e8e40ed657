"""Which handler serves which API: the broker's dispatch table."""

from __future__ import annotations

from kafkite.broker import acls, admin, client_quotas, epochs, fetch, metadata, offsets, produce, sasl
from kafkite.broker.configs import (
    handle_alter_configs,
    handle_describe_configs,
    handle_incremental_alter_configs,
)
from kafkite.broker.core import Broker, Handler
from kafkite.broker.features import handle_update_features
from kafkite.broker.replicas import REPLICA_HANDLERS
from kafkite.protocol.api_keys import ApiKey

CORE_HANDLERS: dict[int, Handler] = {
    ApiKey.API_VERSIONS: metadata.handle_api_versions,
    ApiKey.METADATA: metadata.handle_metadata,
    ApiKey.DESCRIBE_CLUSTER: metadata.handle_describe_cluster,
    ApiKey.PRODUCE: produce.handle_produce,
    ApiKey.FETCH: fetch.handle_fetch,
    ApiKey.LIST_OFFSETS: offsets.handle_list_offsets,
    ApiKey.OFFSET_FOR_LEADER_EPOCH: epochs.handle_offset_for_leader_epoch,
    ApiKey.DELETE_RECORDS: offsets.handle_delete_records,
    ApiKey.CREATE_TOPICS: admin.handle_create_topics,
    ApiKey.DELETE_TOPICS: admin.handle_delete_topics,
    ApiKey.CREATE_PARTITIONS: admin.handle_create_partitions,
    ApiKey.DESCRIBE_CONFIGS: handle_describe_configs,
    ApiKey.ALTER_CONFIGS: handle_alter_configs,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: handle_incremental_alter_configs,
    ApiKey.SASL_HANDSHAKE: sasl.handle_sasl_handshake,
    ApiKey.SASL_AUTHENTICATE: sasl.handle_sasl_authenticate,
    ApiKey.CREATE_ACLS: acls.handle_create_acls,
    ApiKey.DESCRIBE_ACLS: acls.handle_describe_acls,
    ApiKey.DELETE_ACLS: acls.handle_delete_acls,
    ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS: sasl.handle_describe_user_scram_credentials,
    ApiKey.ALTER_USER_SCRAM_CREDENTIALS: sasl.handle_alter_user_scram_credentials,
    ApiKey.DESCRIBE_CLIENT_QUOTAS: client_quotas.handle_describe_client_quotas,
    ApiKey.ALTER_CLIENT_QUOTAS: client_quotas.handle_alter_client_quotas,
    ApiKey.UPDATE_FEATURES: handle_update_features,
    **REPLICA_HANDLERS,
}


def build_broker(config: object) -> Broker:
    from kafkite.config import BrokerConfig

    assert isinstance(config, BrokerConfig)
    broker = Broker(config)
    broker.handlers.update({int(k): v for k, v in CORE_HANDLERS.items()})
    from kafkite.broker.groups.handlers import attach

    attach(broker)
    from kafkite.broker import txn

    txn.attach(broker)
    # Stream pools wrap every handler registered above: keep this the last step.
    from kafkite.streaming import install

    install(broker)
    # ACL checks wrap the pool wrappers, so ACLs name topics and groups as clients see them.
    from kafkite.security.authz import install_authorizer

    install_authorizer(broker)
    # The doors' security (refuses an open door beside secured Kafka) and the audit trail, outermost.
    from kafkite.security.doors import install as install_doors

    install_doors(broker)
    return broker
