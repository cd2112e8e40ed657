"""kafkite's protocol specs, installed as the package data of ``kafkite.protocol_specs`` (see README.md)."""
