"""Share groups (KIP-932): the share group protocol (``protocol``, ``state``, ``assignor``) and the
share-partitions of the groups (``partition``, ``store``), their share sessions (``sessions``) and the APIs
that consume them (``apis``: ShareFetch, ShareAcknowledge and the share group offset APIs)."""
