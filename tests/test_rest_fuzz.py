"""Bad input on the REST gateway is a 4xx, never a 5xx: schemathesis drives every route of the OpenAPI
document kafkite ships (``kafkite.rest.openapi``, served at ``/openapi.json``), and every JSON endpoint
refuses nesting bombs and oversized bodies with OCI's InvalidParameter.

A short run by default; ``KAFKITE_SLOW=1`` runs many more examples per route.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from helpers import SLOW, BrokerProcess, free_port, stop_all
from hypothesis import HealthCheck, settings

from kafkite.rest.guard import MAX_BODY_BYTES, MAX_JSON_DEPTH, json_depth_ok, parse_json
from kafkite.rest.openapi import document

pytestmark = pytest.mark.timeout(1800 if SLOW else 300)

COMPARTMENT = "ocid1.compartment.oc1..fuzz"
EXAMPLES = 400 if SLOW else 25
schema = schemathesis.openapi.from_dict(document())


@dataclass
class Gateway:
    broker: BrokerProcess
    url: str
    ids: dict[str, str]


def call(url: str, method: str = "GET", body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text.decode(errors="replace")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("rest-fuzz")
    port = free_port()
    b = BrokerProcess(
        root / "data",
        root / "broker.log",
        # Fuzzed CreateStream requests may ask for any number of partitions: keep what they can create small.
        [f"rest.listeners=http://127.0.0.1:{port}", "topic.max.partitions=8", "num.partitions=1"],
    )
    b.start()
    url = f"http://127.0.0.1:{port}"
    try:
        status, stream = call(
            f"{url}/20180418/streams",
            "POST",
            {"name": "fuzzed", "partitions": 2, "compartmentId": COMPARTMENT},
        )
        assert status == 200, stream
        sid = stream["id"]
        status, _ = call(
            f"{url}/20180418/streams/{sid}/messages", "POST", {"messages": [{"key": "aw==", "value": "dg=="}]}
        )
        assert status == 200
        status, cursor = call(
            f"{url}/20180418/streams/{sid}/cursors", "POST", {"partition": "0", "type": "TRIM_HORIZON"}
        )
        assert status == 200
        status, group_cursor = call(
            f"{url}/20180418/streams/{sid}/groupCursors", "POST", {"groupName": "g", "type": "TRIM_HORIZON"}
        )
        assert status == 200
        req = urllib.request.Request(
            f"{url}/20210201/queues",
            data=json.dumps({"displayName": "fuzzed", "compartmentId": COMPARTMENT}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            wr_id = r.headers["opc-work-request-id"]
        status, wr = call(f"{url}/20210201/workRequests/{wr_id}")
        qid = wr["resources"][0]["identifier"]
        call(f"{url}/20210201/queues/{qid}/messages", "POST", {"messages": [{"content": "hello"}]})
        status, pools = call(f"{url}/20180418/streampools?compartmentId={COMPARTMENT}")
        ids = {
            "streamId": sid,
            "queueId": qid,
            "poolId": pools[0]["id"],
            "workRequestId": wr_id,
            "groupName": "g",
            "cursor": cursor["value"],
            "group_cursor": group_cursor["value"],
        }
        yield Gateway(b, url, ids)
    finally:
        stop_all([b])  # fails the module on any traceback the broker logged


# ---------------------------------------------------------------------------------------------- unit


def test_json_depth_is_measured_without_recursion() -> None:
    assert json_depth_ok([[[]]], 3) and not json_depth_ok([[[[]]]], 3)
    assert json_depth_ok({"a": [1, {"b": 2}]}, 3)
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    assert not json_depth_ok(deep)
    with pytest.raises(ValueError, match="nested"):
        parse_json(b"[" * 100_000)
    with pytest.raises(ValueError, match="nested"):
        parse_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_json(b"\xff\xfe")


# ---------------------------------------------------------------------------------------------- bombs


def _json_operations() -> list[tuple[str, str]]:
    out = []
    for path, methods in document()["paths"].items():
        for method, op in methods.items():
            if "requestBody" in op:
                out.append((method.upper(), path))
    return out


def _concrete(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path.replace("{messageReceipt}", "receipt")


def test_every_json_endpoint_refuses_a_nesting_bomb_with_400(gateway: Gateway) -> None:
    ops = _json_operations()
    assert len(ops) == 19  # every route with a JSON body
    for method, path in ops:
        url = gateway.url + _concrete(path, gateway.ids)
        if "{cursor}" in url:
            continue
        status, body = call(url, method, raw=b"[" * 100_000)
        assert status == 400, (method, path, status, body)
        assert body["code"] == "InvalidParameter" and "nested" in body["message"], (method, path, body)


def test_oversized_bodies_are_400_on_both_gateways(gateway: Gateway) -> None:
    big = b'{"messages": ["' + b"x" * (MAX_BODY_BYTES + 1024) + b'"]}'
    for path in (
        f"/20180418/streams/{gateway.ids['streamId']}/messages",
        f"/20210201/queues/{gateway.ids['queueId']}/messages",
    ):
        status, body = call(gateway.url + path, "POST", raw=big)
        assert status == 400 and body["code"] == "InvalidParameter", (path, status, body)
    # The gateway still serves.
    assert call(f"{gateway.url}/20210201/queues/{gateway.ids['queueId']}")[0] == 200


def test_the_gateway_serves_the_document_it_ships(gateway: Gateway) -> None:
    status, served = call(gateway.url + "/openapi.json")
    assert status == 200 and served == document()
    paths = set(served["paths"])
    assert "/20180418/streams/{streamId}/messages" in paths and "/20210201/queues/{queueId}/messages" in paths


# ---------------------------------------------------------------------------------------------- schemathesis


def _with_real_ids(case: Any, ids: dict[str, str]) -> bool:
    """Point the case at live resources (keeping destructive calls off them); False when nothing changed."""
    changed = False
    destructive = case.method.upper() == "DELETE" and not case.path.endswith("{messageReceipt}")
    for name in list(case.path_parameters or {}):
        if name in ids and not destructive:
            case.path_parameters[name] = ids[name]
            changed = True
    if case.query is not None and "cursor" in case.query:
        group = case.path.endswith(("/commit", "/heartbeat"))
        case.query["cursor"] = ids["group_cursor" if group else "cursor"]
        changed = True
    return changed


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_route_answers_5xx(case: Any, gateway: Gateway) -> None:
    if case.query:
        for name in ("timeoutInSeconds",):
            if name in case.query:
                case.query[name] = 0  # long polls would only slow the run down
    for attempt in range(2):
        if attempt == 1 and not _with_real_ids(case, gateway.ids):
            break
        resp = case.call(base_url=gateway.url, timeout=30)
        assert resp.status_code < 500, f"{resp.status_code} for {case.as_curl_command()}: {resp.text[:500]}"
        if resp.status_code >= 400 and resp.headers.get("Content-Type", "").startswith("application/json"):
            body = resp.json()
            assert isinstance(body, dict) and "code" in body and "message" in body, body


def test_tags_of_the_wrong_shape_are_400(gateway: Gateway) -> None:
    """freeformTags is an object of strings and definedTags an object of objects, as the document says."""
    url = gateway.url
    sid = gateway.ids["streamId"]
    bad_bodies: list[dict[str, Any]] = [
        {"freeformTags": {"team": 7}},
        {"freeformTags": ["team"]},
        {"definedTags": {"ns": "value"}},
        {"definedTags": "ns"},
    ]
    for tags in bad_bodies:
        create = {"name": "tagged", "partitions": 1, "compartmentId": COMPARTMENT, **tags}
        status, body = call(f"{url}/20180418/streams", "POST", create)
        assert status == 400 and body["code"] == "InvalidParameter", (tags, status, body)
        status, body = call(f"{url}/20180418/streams/{sid}", "PUT", tags)
        assert status == 400 and body["code"] == "InvalidParameter", (tags, status, body)
    tags = {"freeformTags": {"team": "data"}, "definedTags": {"ns": {"cost": 3}}}
    status, body = call(f"{url}/20180418/streams/{sid}", "PUT", tags)
    assert status == 200, body
    status, stream = call(f"{url}/20180418/streams/{sid}")
    assert status == 200
    assert stream["freeformTags"] == {"team": "data"} and stream["definedTags"] == {"ns": {"cost": 3}}
    status, listed = call(f"{url}/20180418/streams?compartmentId={COMPARTMENT}&name=tagged")
    assert status == 200 and listed == []  # none of the refused creations made a stream
