"""Feature flags (KIP-584): the levels each component serves, the finalized levels, UpdateFeatures.

A component that implements a versioned Kafka feature declares it when it is wired into the broker::

    features_of(broker).declare("group.version", max_level=1)

``max_level`` is the highest level the code serves; 0 means the feature is known but not served (Kafka leaves
such features out of ApiVersions). The finalized level of a feature is its highest supported level until
UpdateFeatures changes it; a change is kept in ``features.json`` of ``log.dirs`` (file engine; in memory
otherwise) and announced to the callbacks registered with ``on_change``.

ApiVersions v3+ carries the supported ranges and the finalized levels (``api_versions_fields``); v3 leaves
out features whose minimum level is 0, as Kafka does for clients that cannot read such ranges.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from kafkite.broker.core import Broker, RequestContext

log = logging.getLogger("kafkite.features")

FEATURES_FILE = "features.json"

TRANSACTION_VERSION = "transaction.version"
GROUP_VERSION = "group.version"
SHARE_VERSION = "share.version"
STREAMS_VERSION = "streams.version"
ELR_VERSION = "eligible.leader.replicas.version"

# Kafka's feature names and what their levels mean, declared here at level 0 (not served) until the
# component implementing a level declares it.
KNOWN_FEATURES: dict[str, str] = {
    TRANSACTION_VERSION: "1: flexible transaction log records; 2: a producer epoch per transaction (KIP-890)",
    GROUP_VERSION: "1: the consumer group protocol (KIP-848)",
    SHARE_VERSION: "1: share groups (KIP-932)",
    STREAMS_VERSION: "1: the streams group protocol (KIP-1071)",
    ELR_VERSION: "1: eligible leader replicas (KIP-966)",
}

UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE = 1, 2, 3


@dataclass(frozen=True)
class Feature:
    name: str
    max_level: int
    min_level: int = 0
    doc: str = ""

    @property
    def served(self) -> bool:
        return self.max_level > 0

    def range_text(self) -> str:
        return (
            str(self.min_level) if self.min_level == self.max_level else f"{self.min_level}-{self.max_level}"
        )


class FeatureError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Features:
    """Declared features, their finalized levels and the epoch of the last change."""

    def __init__(self, node_id: int, path: Path | None = None) -> None:
        self.node_id = node_id
        self.path = path
        self._declared: dict[str, Feature] = {n: Feature(n, 0, 0, doc) for n, doc in KNOWN_FEATURES.items()}
        self._finalized: dict[str, int] = {}  # levels set by UpdateFeatures
        self.epoch = 0
        self._callbacks: list[Callable[[str, int], None]] = []
        self._load()

    # ------------------------------------------------------------------ declaration

    def declare(self, name: str, max_level: int, *, min_level: int = 0, doc: str = "") -> None:
        """Say which levels of ``name`` this broker serves (call again to change them)."""
        if max_level < min_level or min_level < 0:
            raise ValueError(f"bad level range {min_level}-{max_level} for feature {name}")
        self._declared[name] = Feature(name, max_level, min_level, doc or KNOWN_FEATURES.get(name, ""))
        level = self._finalized.get(name)
        if level is not None and level > max_level:
            log.warning(
                "feature %s was finalized at level %d; this broker serves up to %d", name, level, max_level
            )
            self._finalized[name] = max_level

    def on_change(self, callback: Callable[[str, int], None]) -> None:
        """Call ``callback(name, level)`` whenever UpdateFeatures changes a finalized level."""
        self._callbacks.append(callback)

    def feature(self, name: str) -> Feature | None:
        return self._declared.get(name)

    def supported(self) -> list[Feature]:
        """Features this broker serves at some level above 0."""
        return [f for _, f in sorted(self._declared.items()) if f.served]

    def level(self, name: str) -> int:
        """The finalized level of ``name``: its highest supported level unless UpdateFeatures set another."""
        f = self._declared.get(name)
        if f is None:
            return 0
        return self._finalized.get(name, f.max_level)

    def finalized(self) -> dict[str, int]:
        """Every feature with a finalized level above 0."""
        out = {name: self.level(name) for name in sorted(self._declared)}
        return {n: lv for n, lv in out.items() if lv > 0}

    def api_versions_fields(self, version: int) -> dict[str, Any]:
        """The feature fields of an ApiVersions response of ``version`` (3+)."""
        return {
            "supported_features": [
                {"name": f.name, "min_version": f.min_level, "max_version": f.max_level}
                for f in self.supported()
                if version >= 4 or f.min_level > 0
            ],
            "finalized_features": [
                {"name": n, "max_version_level": lv, "min_version_level": lv}
                for n, lv in self.finalized().items()
            ],
            "finalized_features_epoch": self.epoch,
        }

    # ------------------------------------------------------------------ UpdateFeatures

    def check(self, name: str, level: int, upgrade_type: int) -> None:
        """Raise FeatureError (INVALID_UPDATE_VERSION) when ``name`` cannot be set to ``level``, as Kafka's
        controller checks it."""

        def invalid(why: str) -> FeatureError:
            return FeatureError(
                ErrorCode.INVALID_UPDATE_VERSION, f"Invalid update version {level} for feature {name}. {why}"
            )

        if upgrade_type not in (UPGRADE, SAFE_DOWNGRADE, UNSAFE_DOWNGRADE):
            raise invalid("The controller does not support the given upgrade type.")
        current = self.level(name)
        if level < 0:
            raise invalid("A feature version cannot be less than 0.")
        f = self._declared.get(name)
        lo, hi = (f.min_level, f.max_level) if f is not None and f.served else (0, 0)
        if not lo <= level <= hi:
            who = f"Local controller {self.node_id}"
            if hi == 0:
                raise invalid(f"{who} does not support this feature.")
            raise invalid(f"{who} only supports versions {f.range_text() if f else '0'}")
        if level < current and upgrade_type == UPGRADE:
            raise invalid(
                "Can't downgrade the version of this feature without setting the upgrade type to either safe"
                " or unsafe downgrade."
            )
        if level > current and upgrade_type != UPGRADE:
            raise invalid("Can't downgrade to a newer version.")

    def update(self, changes: dict[str, int]) -> None:
        """Finalize the given levels (already checked) and persist them."""
        for name, level in changes.items():
            self._finalized[name] = level
        self.epoch += 1
        self._save()
        for name, level in changes.items():
            log.info("feature %s finalized at level %d", name, level)
            for cb in self._callbacks:
                cb(name, level)

    # ------------------------------------------------------------------ persistence

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            saved = json.loads(self.path.read_text())
            self.epoch = int(saved.get("epoch", 0))
            self._finalized = {str(k): int(v) for k, v in dict(saved.get("levels", {})).items()}
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warning("ignoring %s: %s", self.path, e)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"epoch": self.epoch, "levels": self._finalized}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def features_of(broker: Broker) -> Features:
    """The broker's feature registry (created on first use and kept on the broker)."""

    def make() -> Features:
        path = broker.config.data_dir / FEATURES_FILE if broker.config["storage.engine"] == "file" else None
        return Features(broker.node_id, path)

    return broker.component(Features, make)


async def handle_update_features(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    """UpdateFeatures: all or nothing; the first invalid update fails the request (Kafka's controller)."""
    reg = features_of(broker)
    version = ctx.api_version
    updates: dict[str, tuple[int, int]] = {}
    for u in req["feature_updates"]:
        if version == 0:
            kind = SAFE_DOWNGRADE if u.get("allow_downgrade") else UPGRADE
        else:
            kind = u.get("upgrade_type", UPGRADE)
        updates[u["feature"]] = (u["max_version_level"], kind)
    resp: dict[str, Any] = {"throttle_time_ms": 0, "error_code": 0, "error_message": None, "results": []}
    try:
        for name, (level, kind) in updates.items():
            reg.check(name, level, kind)
    except FeatureError as e:
        resp["error_code"] = int(e.code)
        resp["error_message"] = (
            "The update failed for all features since the following feature had an error: " + e.message
        )
        return resp
    if not req.get("validate_only"):
        changed = {n: lv for n, (lv, _) in updates.items() if lv != reg.level(n)}
        if changed:
            reg.update(changed)
    if version <= 1:
        resp["results"] = [{"feature": n, "error_code": 0, "error_message": None} for n in updates]
    return resp
