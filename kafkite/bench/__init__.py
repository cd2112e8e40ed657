"""``kafkite bench``: produce, consume and end-to-end throughput and latency against any Kafka broker.

Modules: ``stats`` (latency histograms, percentiles, throughput timelines), ``payload`` (messages that
carry their send time), ``workers`` (producers and consumers for the kafkite and confluent-kafka clients,
one process each), ``runner`` (topics, processes, the live progress line, aggregation), ``serve`` (a broker
of the benchmark's own on a free port), ``report`` (table, JSON, PNG plot) and ``cli`` (the subcommand).
"""
