"""Migration dry-runs from a Kafka cluster to OCI-style streams.

``inspect`` looks at a source cluster (topics, configs, groups, a sample of messages, rates over a window),
``plan`` turns what it saw into the pools and streams to create and the blockers to fix (Markdown and JSON),
``apply`` creates them (Kafka admin API or the OCI Streaming admin REST API), ``mirror`` copies the data and
the committed group offsets, resumably, once or continuously (``--follow``), at least once or exactly once,
with a verification pass and an optional rate-paced rehearsal, and ``cutover`` moves a stopped consumer group
to the target and reports the rehearsal. Every limit the planner uses lives in ``limits``.
"""
