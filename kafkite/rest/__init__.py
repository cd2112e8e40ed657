"""HTTP gateways (OCI Streaming and OCI Queue REST APIs) served beside the Kafka listeners."""
