"""kafkite: a Kafka-wire-protocol broker on asyncio, shaped after OCI Streaming.

``kafkite.EmbeddedBroker`` and ``kafkite.AsyncEmbeddedBroker`` run one inside your program (see
``kafkite.embedded``); ``kafkite.__version__`` is the installed version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["AsyncEmbeddedBroker", "EmbeddedBroker", "__version__"]

if TYPE_CHECKING:  # what type checkers see; at run time these are imported on first use
    from kafkite.embedded import AsyncEmbeddedBroker, EmbeddedBroker

    __version__: str


def __getattr__(name: str) -> object:  # imported on first use: ``import kafkite`` stays cheap
    if name in ("EmbeddedBroker", "AsyncEmbeddedBroker"):
        import importlib

        return getattr(importlib.import_module("kafkite.embedded"), name)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("kafkite")
        except PackageNotFoundError:
            return "0+unknown"
    raise AttributeError(f"module 'kafkite' has no attribute {name!r}")
