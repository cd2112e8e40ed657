"""kafkite: a Kafka-wire-protocol broker on asyncio, shaped after OCI Streaming.

``kafkite.EmbeddedBroker`` and ``kafkite.AsyncEmbeddedBroker`` run one inside your program (see
``kafkite.embedded``); ``kafkite.__version__`` is the installed version.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AsyncEmbeddedBroker", "EmbeddedBroker", "__version__"]


def __getattr__(name: str) -> Any:  # imported on first use: ``import kafkite`` stays cheap
    if name in ("EmbeddedBroker", "AsyncEmbeddedBroker"):
        import importlib

        # Not a static import: type checkers of any kafkite module would otherwise follow it into the broker.
        return getattr(importlib.import_module("kafkite.embedded"), name)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("kafkite")
        except PackageNotFoundError:
            return "0+unknown"
    raise AttributeError(f"module 'kafkite' has no attribute {name!r}")
