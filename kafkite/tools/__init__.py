"""The command-line tools around the broker (``kafkite topic|produce|consume|group``), usable with any
Kafka-compatible broker."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse
    from typing import TypeAlias

    # What each subcommand module's ``add_parser`` receives (argparse's subparsers action is generic in its
    # stubs only).
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
