"""Security: TLS contexts, the SCRAM user store, the ACL authorizer and client quotas.

``security_of(broker)`` gives the broker's :class:`Security` (``Broker.security``, made on first use):
users in ``users.json``, ACLs in ``acls.json`` and client quotas in ``client_quotas.json`` of the data
directory (in memory with the memory engine), an authorizer only when ``authorizer.class.name`` is set, and
the quota manager.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kafkite.security.acl import ACLS_FILE, AclAuthorizer, parse_super_users
from kafkite.security.quotas import CLIENT_QUOTAS_FILE, ClientQuotaStore, QuotaManager
from kafkite.security.users import USERS_FILE, UserStore

if TYPE_CHECKING:
    from kafkite.config import BrokerConfig

__all__ = ["Security", "security_of"]


class Security:
    def __init__(self, cfg: BrokerConfig) -> None:
        data_dir: Path | None = cfg.data_dir if cfg["storage.engine"] == "file" else None
        self.config = cfg
        self.users = UserStore(data_dir / USERS_FILE if data_dir is not None else None)
        self.authorizer: AclAuthorizer | None = None
        if cfg["authorizer.class.name"]:
            self.authorizer = AclAuthorizer(
                data_dir / ACLS_FILE if data_dir is not None else None,
                parse_super_users(cfg["super.users"]),
                cfg["allow.everyone.if.no.acl.found"],
            )
        store = ClientQuotaStore(data_dir / CLIENT_QUOTAS_FILE if data_dir is not None else None)
        self.quotas = QuotaManager(lambda key: cfg[key], store=store)


class _HasSecurity(Protocol):
    @property
    def security(self) -> Security: ...


def security_of(broker: _HasSecurity | Any) -> Security:
    sec = broker.security
    assert isinstance(sec, Security)
    return sec
