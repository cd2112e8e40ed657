"""Every API the broker serves, declared once: its spec (``protocol_specs/``, by API key), its handler, its
authorization rule, the fields that carry topic names, group ids and transactional ids (mapped by stream
pools, named by the audit trail), its metrics label, and whether it is served before authentication.

``kafkite.compose`` builds the dispatch table from ``APIS``: one dict lookup per request, every wrapper
(stream pools, ACLs, audit) composed once at start-up. ``tests/test_api_registry.py`` checks that every API
ApiVersions advertises is declared here with each part, and that nothing is declared that is not served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kafkite.broker import (
    acls,
    admin,
    authz,
    client_quotas,
    configs,
    epochs,
    features,
    fetch,
    metadata,
    offsets,
    produce,
    replicas,
    sasl,
)
from kafkite.broker.core import Broker, Handler
from kafkite.broker.groups import handlers as groups
from kafkite.broker.names import (
    GROUP,
    NO_NAMES,
    TOPIC,
    TXN,
    Fields,
    field,
    fields,
    is_group_key,
    is_group_resource,
    is_topic_resource,
)
from kafkite.broker.txn import handlers as txn
from kafkite.protocol.api_keys import ApiKey
from kafkite.security.acl import AclOperation as Op


@dataclass(frozen=True, slots=True)
class Api:
    key: ApiKey
    handler: Handler
    authz: authz.Rule  # the ACL checks around the handler (authz.unchecked: none)
    names: Fields  # (request fields, response fields) naming topics, groups and transactional ids
    label: str  # the ``api`` label of the request metrics and the request log
    pre_auth: bool = False  # served on a SASL listener before authentication
    served: Callable[[Broker], bool] | None = None  # None: always; else whether this broker serves it


APIS: tuple[Api, ...] = (
    Api(
        ApiKey.PRODUCE,
        produce.handle_produce,
        authz=authz.produce,
        names=fields([field("topic_data.*.name")], [field("responses.*.name")]),
        label="Produce",
    ),
    Api(
        ApiKey.FETCH,
        fetch.handle_fetch,
        authz=authz.fetch,
        names=fields(
            [field("topics.*.topic"), field("forgotten_topics_data.*.topic")],
            [field("responses.*.topic")],
        ),
        label="Fetch",
    ),
    Api(
        ApiKey.LIST_OFFSETS,
        offsets.handle_list_offsets,
        authz=authz.list_offsets,
        names=fields([field("topics.*.name")], [field("topics.*.name")]),
        label="ListOffsets",
    ),
    Api(
        ApiKey.METADATA,
        metadata.handle_metadata,
        authz=authz.metadata,
        names=fields([field("topics.*.name")], [field("topics.*.name")]),
        label="Metadata",
    ),
    Api(
        ApiKey.OFFSET_COMMIT,
        groups.handle_offset_commit,
        authz=authz.offset_commit,
        names=fields(
            [field("group_id", GROUP), field("topics.*.name")],
            [field("topics.*.name")],
        ),
        label="OffsetCommit",
    ),
    Api(
        ApiKey.OFFSET_FETCH,
        groups.handle_offset_fetch,
        authz=authz.offset_fetch,
        names=fields(
            [
                field("group_id", GROUP),
                field("topics.*.name"),
                field("groups.*.group_id", GROUP),
                field("groups.*.topics.*.name"),
            ],
            [field("topics.*.name"), field("groups.*.group_id", GROUP), field("groups.*.topics.*.name")],
        ),
        label="OffsetFetch",
    ),
    Api(
        ApiKey.FIND_COORDINATOR,
        groups.handle_find_coordinator,
        authz=authz.find_coordinator,
        names=fields(
            [field("key", GROUP, is_group_key), field("coordinator_keys.*", GROUP)],
            [field("coordinators.*.key", GROUP)],
        ),
        label="FindCoordinator",
    ),
    Api(
        ApiKey.JOIN_GROUP,
        groups.handle_join_group,
        authz=authz.group_error_rule(Op.READ),
        names=fields([field("group_id", GROUP)], []),
        label="JoinGroup",
    ),
    Api(
        ApiKey.HEARTBEAT,
        groups.handle_heartbeat,
        authz=authz.group_error_rule(Op.READ),
        names=fields([field("group_id", GROUP)], []),
        label="Heartbeat",
    ),
    Api(
        ApiKey.LEAVE_GROUP,
        groups.handle_leave_group,
        authz=authz.group_error_rule(Op.READ),
        names=fields([field("group_id", GROUP)], []),
        label="LeaveGroup",
    ),
    Api(
        ApiKey.SYNC_GROUP,
        groups.handle_sync_group,
        authz=authz.group_error_rule(Op.READ),
        names=fields([field("group_id", GROUP)], []),
        label="SyncGroup",
    ),
    Api(
        ApiKey.DESCRIBE_GROUPS,
        groups.handle_describe_groups,
        authz=authz.describe_groups,
        names=fields([field("groups.*", GROUP)], [field("groups.*.group_id", GROUP)]),
        label="DescribeGroups",
    ),
    Api(
        ApiKey.LIST_GROUPS,
        groups.handle_list_groups,
        authz=authz.list_groups,
        names=fields([], [field("groups.*.group_id", GROUP)]),
        label="ListGroups",
    ),
    Api(
        ApiKey.SASL_HANDSHAKE,
        sasl.handle_sasl_handshake,
        authz=authz.unchecked,
        names=NO_NAMES,
        label="SaslHandshake",
        pre_auth=True,
    ),
    Api(
        ApiKey.API_VERSIONS,
        metadata.handle_api_versions,
        authz=authz.unchecked,
        names=NO_NAMES,
        label="ApiVersions",
        pre_auth=True,
    ),
    Api(
        ApiKey.CREATE_TOPICS,
        admin.handle_create_topics,
        authz=authz.create_topics,
        names=fields([field("topics.*.name")], [field("topics.*.name")]),
        label="CreateTopics",
    ),
    Api(
        ApiKey.DELETE_TOPICS,
        admin.handle_delete_topics,
        authz=authz.delete_topics,
        names=fields(
            [field("topic_names.*"), field("topics.*.name")],
            [field("responses.*.name")],
        ),
        label="DeleteTopics",
    ),
    Api(
        ApiKey.DELETE_RECORDS,
        offsets.handle_delete_records,
        authz=authz.delete_records,
        names=fields([field("topics.*.name")], [field("topics.*.name")]),
        label="DeleteRecords",
    ),
    Api(
        ApiKey.INIT_PRODUCER_ID,
        txn.handle_init_producer_id,
        authz=authz.init_producer_id,
        names=fields([field("transactional_id", TXN)], []),
        label="InitProducerId",
    ),
    Api(
        ApiKey.OFFSET_FOR_LEADER_EPOCH,
        epochs.handle_offset_for_leader_epoch,
        authz=authz.offset_for_leader_epoch,
        names=fields([field("topics.*.topic")], [field("topics.*.topic")]),
        label="OffsetForLeaderEpoch",
    ),
    Api(
        ApiKey.ADD_PARTITIONS_TO_TXN,
        txn.handle_add_partitions_to_txn,
        authz=authz.add_partitions_to_txn,
        names=fields(
            [
                field("v3_and_below_transactional_id", TXN),
                field("v3_and_below_topics.*.name"),
                field("transactions.*.transactional_id", TXN),
                field("transactions.*.topics.*.name"),
            ],
            [
                field("results_by_topic_v3_and_below.*.name"),
                field("results_by_transaction.*.transactional_id", TXN),
                field("results_by_transaction.*.topic_results.*.name"),
            ],
        ),
        label="AddPartitionsToTxn",
    ),
    Api(
        ApiKey.ADD_OFFSETS_TO_TXN,
        txn.handle_add_offsets_to_txn,
        authz=authz.txn_id_only,
        names=fields([field("transactional_id", TXN), field("group_id", GROUP)], []),
        label="AddOffsetsToTxn",
    ),
    Api(
        ApiKey.END_TXN,
        txn.handle_end_txn,
        authz=authz.txn_id_only,
        names=fields([field("transactional_id", TXN)], []),
        label="EndTxn",
    ),
    Api(
        ApiKey.TXN_OFFSET_COMMIT,
        txn.handle_txn_offset_commit,
        authz=authz.txn_offset_commit,
        names=fields(
            [field("transactional_id", TXN), field("group_id", GROUP), field("topics.*.name")],
            [field("topics.*.name")],
        ),
        label="TxnOffsetCommit",
    ),
    Api(
        ApiKey.DESCRIBE_ACLS,
        acls.handle_describe_acls,
        authz=authz.unchecked,
        names=NO_NAMES,
        label="DescribeAcls",
    ),
    Api(
        ApiKey.CREATE_ACLS,
        acls.handle_create_acls,
        authz=authz.unchecked,
        names=NO_NAMES,
        label="CreateAcls",
    ),
    Api(
        ApiKey.DELETE_ACLS,
        acls.handle_delete_acls,
        authz=authz.unchecked,
        names=NO_NAMES,
        label="DeleteAcls",
    ),
    Api(
        ApiKey.DESCRIBE_CONFIGS,
        configs.handle_describe_configs,
        authz=authz.configs_rule(Op.DESCRIBE_CONFIGS, "results"),
        names=fields(
            [
                field("resources.*.resource_name", TOPIC, is_topic_resource),
                field("resources.*.resource_name", GROUP, is_group_resource),
            ],
            [
                field("results.*.resource_name", TOPIC, is_topic_resource),
                field("results.*.resource_name", GROUP, is_group_resource),
            ],
        ),
        label="DescribeConfigs",
    ),
    Api(
        ApiKey.ALTER_CONFIGS,
        configs.handle_alter_configs,
        authz=authz.configs_rule(Op.ALTER_CONFIGS, "responses"),
        names=fields(
            [field("resources.*.resource_name", TOPIC, is_topic_resource)],
            [field("responses.*.resource_name", TOPIC, is_topic_resource)],
        ),
        label="AlterConfigs",
    ),
    Api(
        ApiKey.DESCRIBE_LOG_DIRS,
        replicas.handle_describe_log_dirs,
        authz=authz.describe_log_dirs,
        names=fields([field("topics.*.topic")], [field("results.*.topics.*.name")]),
        label="DescribeLogDirs",
    ),
    Api(
        ApiKey.SASL_AUTHENTICATE,
        sasl.handle_sasl_authenticate,
        authz=authz.unchecked,
        names=NO_NAMES,
        label="SaslAuthenticate",
        pre_auth=True,
    ),
    Api(
        ApiKey.CREATE_PARTITIONS,
        admin.handle_create_partitions,
        authz=authz.create_partitions,
        names=fields([field("topics.*.name")], [field("results.*.name")]),
        label="CreatePartitions",
    ),
    Api(
        ApiKey.DELETE_GROUPS,
        groups.handle_delete_groups,
        authz=authz.delete_groups,
        names=fields([field("groups_names.*", GROUP)], [field("results.*.group_id", GROUP)]),
        label="DeleteGroups",
    ),
    Api(
        ApiKey.ELECT_LEADERS,
        replicas.handle_elect_leaders,
        authz=authz.cluster_op_rule(Op.ALTER, authz.elect_leaders_denied),
        names=fields([field("topic_partitions.*.topic")], [field("replica_election_results.*.topic")]),
        label="ElectLeaders",
    ),
    Api(
        ApiKey.INCREMENTAL_ALTER_CONFIGS,
        configs.handle_incremental_alter_configs,
        authz=authz.configs_rule(Op.ALTER_CONFIGS, "responses"),
        names=fields(
            [
                field("resources.*.resource_name", TOPIC, is_topic_resource),
                field("resources.*.resource_name", GROUP, is_group_resource),
            ],
            [
                field("responses.*.resource_name", TOPIC, is_topic_resource),
                field("responses.*.resource_name", GROUP, is_group_resource),
            ],
        ),
        label="IncrementalAlterConfigs",
    ),
    Api(
        ApiKey.ALTER_PARTITION_REASSIGNMENTS,
        replicas.handle_alter_partition_reassignments,
        authz=authz.cluster_op_rule(Op.ALTER, authz.alter_reassignments_denied),
        names=fields([field("topics.*.name")], [field("responses.*.name")]),
        label="AlterPartitionReassignments",
    ),
    Api(
        ApiKey.LIST_PARTITION_REASSIGNMENTS,
        replicas.handle_list_partition_reassignments,
        authz=authz.cluster_op_rule(Op.DESCRIBE, authz.list_reassignments_denied),
        names=fields([field("topics.*.name")], [field("topics.*.name")]),
        label="ListPartitionReassignments",
    ),
    Api(
        ApiKey.OFFSET_DELETE,
        groups.handle_offset_delete,
        authz=authz.offset_delete,
        names=fields([field("group_id", GROUP), field("topics.*.name")], [field("topics.*.name")]),
        label="OffsetDelete",
    ),
    Api(
        ApiKey.DESCRIBE_CLIENT_QUOTAS,
        client_quotas.handle_describe_client_quotas,
        authz=authz.unchecked,
        names=NO_NAMES,
        label="DescribeClientQuotas",
    ),
    Api(
        ApiKey.ALTER_CLIENT_QUOTAS,
        client_quotas.handle_alter_client_quotas,
        authz=authz.unchecked,
        names=NO_NAMES,
        label="AlterClientQuotas",
    ),
    Api(
        ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS,
        sasl.handle_describe_user_scram_credentials,
        authz=authz.unchecked,
        names=NO_NAMES,
        label="DescribeUserScramCredentials",
    ),
    Api(
        ApiKey.ALTER_USER_SCRAM_CREDENTIALS,
        sasl.handle_alter_user_scram_credentials,
        authz=authz.unchecked,
        names=NO_NAMES,
        label="AlterUserScramCredentials",
    ),
    Api(
        ApiKey.UPDATE_FEATURES,
        features.handle_update_features,
        authz=authz.cluster_op_rule(Op.ALTER, authz.update_features_denied),
        names=NO_NAMES,
        label="UpdateFeatures",
    ),
    Api(
        ApiKey.DESCRIBE_CLUSTER,
        metadata.handle_describe_cluster,
        authz=authz.describe_cluster,
        names=NO_NAMES,
        label="DescribeCluster",
    ),
    Api(
        ApiKey.DESCRIBE_PRODUCERS,
        txn.handle_describe_producers,
        authz=authz.describe_producers,
        names=fields([field("topics.*.name")], [field("topics.*.name")]),
        label="DescribeProducers",
    ),
    Api(
        ApiKey.DESCRIBE_TRANSACTIONS,
        txn.handle_describe_transactions,
        authz=authz.describe_transactions,
        names=fields(
            [field("transactional_ids.*", TXN)],
            [
                field("transaction_states.*.transactional_id", TXN),
                field("transaction_states.*.topics.*.topic"),
            ],
        ),
        label="DescribeTransactions",
    ),
    Api(
        ApiKey.LIST_TRANSACTIONS,
        txn.handle_list_transactions,
        authz=authz.list_transactions,
        names=fields([], [field("transaction_states.*.transactional_id", TXN)]),
        label="ListTransactions",
    ),
    Api(
        ApiKey.CONSUMER_GROUP_HEARTBEAT,
        groups.handle_consumer_group_heartbeat,
        authz=authz.consumer_group_heartbeat,
        names=fields(
            [field("group_id", GROUP), field("subscribed_topic_names.*")],
            [],
        ),
        label="ConsumerGroupHeartbeat",
        served=groups.consumer_protocol_served,
    ),
    Api(
        ApiKey.CONSUMER_GROUP_DESCRIBE,
        groups.handle_consumer_group_describe,
        authz=authz.consumer_group_describe,
        names=fields(
            [field("group_ids.*", GROUP)],
            [
                field("groups.*.group_id", GROUP),
                field("groups.*.members.*.subscribed_topic_names.*"),
                field("groups.*.members.*.assignment.topic_partitions.*.topic_name"),
                field("groups.*.members.*.target_assignment.topic_partitions.*.topic_name"),
            ],
        ),
        label="ConsumerGroupDescribe",
        served=groups.consumer_protocol_served,
    ),
    Api(
        ApiKey.SHARE_GROUP_HEARTBEAT,
        groups.handle_share_group_heartbeat,
        authz=authz.share_group_heartbeat,
        names=fields([field("group_id", GROUP), field("subscribed_topic_names.*")], []),
        label="ShareGroupHeartbeat",
    ),
    Api(
        ApiKey.SHARE_GROUP_DESCRIBE,
        groups.handle_share_group_describe,
        authz=authz.share_group_describe,
        names=fields(
            [field("group_ids.*", GROUP)],
            [
                field("groups.*.group_id", GROUP),
                field("groups.*.members.*.subscribed_topic_names.*"),
                field("groups.*.members.*.assignment.topic_partitions.*.topic_name"),
            ],
        ),
        label="ShareGroupDescribe",
    ),
    Api(
        ApiKey.SHARE_FETCH,
        groups.handle_share_fetch,
        authz=authz.share_fetch,
        names=fields([field("group_id", GROUP)], []),
        label="ShareFetch",
    ),
    Api(
        ApiKey.SHARE_ACKNOWLEDGE,
        groups.handle_share_acknowledge,
        authz=authz.share_acknowledge,
        names=fields([field("group_id", GROUP)], []),
        label="ShareAcknowledge",
    ),
    Api(
        ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS,
        groups.handle_describe_share_group_offsets,
        authz=authz.describe_share_group_offsets,
        names=fields(
            [field("groups.*.group_id", GROUP), field("groups.*.topics.*.topic_name")],
            [field("groups.*.group_id", GROUP), field("groups.*.topics.*.topic_name")],
        ),
        label="DescribeShareGroupOffsets",
    ),
    Api(
        ApiKey.ALTER_SHARE_GROUP_OFFSETS,
        groups.handle_alter_share_group_offsets,
        authz=authz.alter_share_group_offsets,
        names=fields(
            [field("group_id", GROUP), field("topics.*.topic_name")], [field("responses.*.topic_name")]
        ),
        label="AlterShareGroupOffsets",
    ),
    Api(
        ApiKey.DELETE_SHARE_GROUP_OFFSETS,
        groups.handle_delete_share_group_offsets,
        authz=authz.delete_share_group_offsets,
        names=fields(
            [field("group_id", GROUP), field("topics.*.topic_name")], [field("responses.*.topic_name")]
        ),
        label="DeleteShareGroupOffsets",
    ),
    Api(
        ApiKey.DESCRIBE_TOPIC_PARTITIONS,
        replicas.handle_describe_topic_partitions,
        authz=authz.describe_topic_partitions,
        names=fields(
            [field("topics.*.name"), field("cursor.topic_name")],
            [field("topics.*.name"), field("next_cursor.topic_name")],
        ),
        label="DescribeTopicPartitions",
    ),
)

BY_KEY: dict[int, Api] = {int(api.key): api for api in APIS}
PRE_AUTH: frozenset[int] = frozenset(key for key, api in BY_KEY.items() if api.pre_auth)
LABELS: dict[int, str] = {key: api.label for key, api in BY_KEY.items()}


def served(broker: Broker) -> dict[int, Handler]:
    """The handlers this broker serves, by API key (before any wrapper)."""
    return {key: api.handler for key, api in BY_KEY.items() if api.served is None or api.served(broker)}
