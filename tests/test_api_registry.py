"""Each API is declared once (kafkite.broker.apis): spec, handler, authorization rule, name fields,
metrics label. Every API ApiVersions advertises has each of them; nothing is declared that is not served."""

from __future__ import annotations

import inspect

import pytest

from kafkite.broker import apis, authz
from kafkite.broker.core import RequestContext
from kafkite.broker.metadata import supported_api_versions
from kafkite.broker.names import NameField
from kafkite.compose import build_broker
from kafkite.config import BrokerConfig
from kafkite.protocol.messages import registry


def _broker(**extra: str) -> object:
    return build_broker(BrokerConfig({"storage.engine": "memory", **extra}))


def test_every_advertised_api_is_declared_with_each_part() -> None:
    broker = _broker()
    advertised = {v["api_key"] for v in supported_api_versions(broker)}  # type: ignore[arg-type]
    assert advertised, "ApiVersions advertises nothing"
    reg = registry()
    for key in advertised:
        api = apis.BY_KEY.get(key)
        assert api is not None, f"API {key} is advertised but not declared in kafkite.broker.apis"
        spec = reg.api(key)
        assert spec is not None, f"{api.label}: no spec in protocol_specs/"
        assert api.label == spec.name, f"API {key}: label {api.label!r}, spec {spec.name!r}"
        assert inspect.iscoroutinefunction(api.handler), f"{api.label}: handler is not async"
        assert callable(api.authz), f"{api.label}: no authorization rule"
        req_fields, resp_fields = api.names
        assert all(isinstance(f, NameField) for f in (*req_fields, *resp_fields))


def test_nothing_declared_that_is_not_served() -> None:
    served = set(apis.served(_broker()))  # type: ignore[arg-type]
    declared = set(apis.BY_KEY)
    conditional = {key for key, api in apis.BY_KEY.items() if api.served is not None}
    assert declared - conditional <= served
    # Each conditional API is served by some configuration.
    assert conditional <= served | set(
        apis.served(_broker(**{"group.coordinator.rebalance.protocols": "classic,consumer"}))  # type: ignore[arg-type]
    )
    # And a spec in protocol_specs/ belongs to a declared API (a spec without a handler is drift).
    assert set(registry().apis) == declared


def test_consumer_group_apis_follow_the_rebalance_protocols() -> None:
    without = _broker(**{"group.coordinator.rebalance.protocols": "classic"})
    keys = {v["api_key"] for v in supported_api_versions(without)}  # type: ignore[arg-type]
    assert not {int(a.key) for a in apis.APIS if a.served is not None} & keys


def test_labels_are_unique_and_pre_auth_is_only_the_handshake() -> None:
    labels = [a.label for a in apis.APIS]
    assert len(labels) == len(set(labels))
    assert {apis.BY_KEY[k].label for k in apis.PRE_AUTH} == {
        "ApiVersions",
        "SaslHandshake",
        "SaslAuthenticate",
    }


@pytest.mark.parametrize("api", apis.APIS, ids=lambda a: a.label)
def test_each_rule_runs_on_an_empty_acl_set(api: apis.Api) -> None:
    """Each declared rule is a coroutine function of (check, request, inner)."""
    params = list(inspect.signature(api.authz).parameters)
    assert len(params) == 3, api.label
    assert inspect.iscoroutinefunction(api.authz) or api.authz is authz.unchecked


def test_dispatch_is_one_lookup() -> None:
    """The handlers table holds the composed handlers by API key: nothing is looked up per request but it."""
    broker = _broker()
    handlers = broker.handlers  # type: ignore[attr-defined]
    assert set(handlers) == set(apis.served(broker))  # type: ignore[arg-type]
    ctx = RequestContext(api_key=18, api_version=3, correlation_id=1, client_id="t", client_host="127.0.0.1")
    assert ctx.api_key in handlers
