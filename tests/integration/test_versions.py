"""Every API at every version the broker advertises answers a minimal request, and answers it decodably."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import BrokerProcess, RawClient

from kafkite.protocol import framing

# Requests whose minimal form the broker rightly answers by closing or not at all.
SKIP = {
    17: "SaslHandshake changes the connection's state",
    36: "SaslAuthenticate without a handshake closes the connection",
}
BODIES: dict[int, dict[str, Any]] = {
    0: {"acks": -1, "timeout_ms": 1000, "topic_data": []},  # acks=0 would get no answer
}


def advertised(bootstrap: str) -> list[tuple[int, int]]:
    with RawClient.to(bootstrap) as c:
        apis = c.api_versions()["api_keys"]
    return [(a["api_key"], v) for a in apis for v in range(a["min_version"], a["max_version"] + 1)]


def test_every_advertised_version_answers(shared_broker: BrokerProcess) -> None:
    pairs = advertised(shared_broker.bootstrap)
    assert len(pairs) > 50
    failures = []
    for key, version in pairs:
        if key in SKIP:
            continue
        with RawClient.to(shared_broker.bootstrap) as c:
            try:
                cid, frame = c.encode(key, version, dict(BODIES.get(key, {})))
                c.send_raw(frame)
                got_cid, _ = framing.decode_response(c.reg, key, version, c.recv_frame())
                if got_cid != cid:
                    failures.append(f"api {key} v{version}: correlation id {got_cid} != {cid}")
            except Exception as e:
                failures.append(f"api {key} v{version}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("version", range(0, 5))
def test_api_versions_each_version(shared_broker: BrokerProcess, version: int) -> None:
    with RawClient.to(shared_broker.bootstrap) as c:
        resp = c.api_versions(version=version)
    assert resp["error_code"] == 0
    keys = {a["api_key"] for a in resp["api_keys"]}
    assert {0, 1, 2, 3, 18, 19, 20} <= keys


def test_api_versions_reports_the_group_version_feature(shared_broker: BrokerProcess) -> None:
    with RawClient.to(shared_broker.bootstrap) as c:
        resp = c.api_versions(version=4)
        v3 = c.api_versions(version=3)
    assert ("group.version", 0, 1) in {
        (f["name"], f["min_version"], f["max_version"]) for f in resp["supported_features"]
    }
    # Version 3 leaves out ranges starting at 0, as Kafka does for clients that cannot read them.
    assert "group.version" not in {f["name"] for f in v3["supported_features"]}
    for r in (resp, v3):
        assert r["finalized_features_epoch"] >= 0
        assert ("group.version", 1) in {(f["name"], f["max_version_level"]) for f in r["finalized_features"]}
    assert {68, 69} <= {a["api_key"] for a in resp["api_keys"]}
