"""An OCI Streaming REST target (API 20180418): a stream pool's streams, PutMessages, cursors and GetMessages.

Requests are signed by the ``oci`` SDK when an OCI config file is given (``--oci-config``); otherwise they are
plain JSON over aiohttp (an endpoint that does not verify signatures, such as kafkite's gateway with
``streaming.auth.enable=false``). Streams are found by name in the pool, or created as ``migrate apply`` does.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kafkite.migrate.apply import API, Admin, RestAdmin, SdkAdmin, wait_active
from kafkite.migrate.sinks import RestThrottled, RestUnavailable
from kafkite.migrate.state import MirrorError

if TYPE_CHECKING:
    import aiohttp

POOL_PREFIX = "ocid1.streampool."


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


class RestRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class OciStreamingTarget:
    """A stream pool reached over OCI Streaming's REST API."""

    def __init__(
        self,
        url: str,
        pool: str,
        *,
        compartment: str,
        oci_config: str | None = None,
        oci_profile: str = "DEFAULT",
    ) -> None:
        self.url = url.rstrip("/")
        self.pool_ref = pool
        self.compartment = compartment
        self.oci_config = oci_config
        self.oci_profile = oci_profile
        self.pool_id = ""
        self.pool: dict[str, Any] = {}
        self.streams: dict[str, dict[str, Any]] = {}  # name -> {"id", "partitions", "messagesEndpoint"}
        self._session: aiohttp.ClientSession | None = None
        self._sdk: Any = None  # an oci.streaming.StreamClient (the oci SDK has no type information)
        self._admin: Admin | None = None

    # -------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self.oci_config:
            import oci

            config = oci.config.from_file(self.oci_config, self.oci_profile)
            none = oci.retry.NoneRetryStrategy()
            self._sdk = oci.streaming.StreamClient(config, service_endpoint=self.url, retry_strategy=none)
            self._admin = SdkAdmin(self.url, self.oci_config, self.oci_profile)
            self._oci = oci
        else:
            import aiohttp

            self._session = aiohttp.ClientSession(headers={"accept": "application/json"})
            self._admin = RestAdmin(self.url, self._session)
        await self._resolve_pool()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> OciStreamingTarget:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def admin(self) -> Admin:
        if self._admin is None:
            raise MirrorError(f"the OCI Streaming target {self.url} is not open")
        return self._admin

    async def _resolve_pool(self) -> None:
        ref = self.pool_ref
        try:
            if ref.startswith(POOL_PREFIX):
                pool = await self.admin.get_pool(ref)
            else:
                found = [
                    p
                    for p in await self.admin.pools_named(self.compartment, ref)
                    if p.get("lifecycleState") not in ("DELETED", "DELETING")
                ]
                if not found:
                    raise MirrorError(
                        f"no stream pool named {ref!r} in {self.compartment} at {self.url} (create it with "
                        "`kafkite migrate apply`, or pass the pool OCID)"
                    )
                pool = found[0]
        except Exception as e:
            if isinstance(e, MirrorError):
                raise
            raise MirrorError(f"cannot find the stream pool {ref!r} at {self.url}: {e}") from e
        self.pool_id = pool["id"]
        self.pool = await self._pool_details(self.pool_id)

    async def _pool_details(self, pool_id: str) -> dict[str, Any]:
        admin = self.admin
        if isinstance(admin, SdkAdmin):
            data = (await asyncio.to_thread(admin.client.get_stream_pool, pool_id)).data
            ks = data.kafka_settings
            return {
                "id": data.id,
                "name": data.name,
                "kafkaSettings": {"bootstrapServers": getattr(ks, "bootstrap_servers", None)} if ks else {},
            }
        assert isinstance(admin, RestAdmin)
        return dict(await admin.call("GET", f"/streampools/{pool_id}"))

    @property
    def kafka_bootstrap(self) -> str | None:
        ks = self.pool.get("kafkaSettings") or {}
        value = ks.get("bootstrapServers")
        return str(value) if value else None

    # -------------------------------------------------------------- streams

    async def stream(self, name: str) -> dict[str, Any] | None:
        if name in self.streams:
            return self.streams[name]
        found = [
            s
            for s in await self.admin.streams_named(self.pool_id, name)
            if s.get("lifecycleState") not in ("DELETED", "DELETING")
        ]
        if not found:
            return None
        s = found[0]
        if s.get("lifecycleState") != "ACTIVE":
            s = await wait_active(self.admin.get_stream, s["id"])
        info = {"id": s["id"], "partitions": int(s.get("partitions") or 0), "name": name}
        self.streams[name] = info
        return info

    async def ensure_stream(self, name: str, partitions: int, hours: int) -> tuple[dict[str, Any], bool]:
        """The stream (created when missing) and whether it was created now."""
        have = await self.stream(name)
        if have is not None:
            return have, False
        created = await self.admin.create_stream(self.pool_id, name, partitions, hours)
        await wait_active(self.admin.get_stream, created["id"])
        self.streams.pop(name, None)
        got = await self.stream(name)
        if got is None:
            raise MirrorError(f"stream {name} vanished after it was created")
        return got, True

    # -------------------------------------------------------------- messages

    async def put(self, topic: str, msgs: list[tuple[bytes | None, bytes]]) -> list[Any]:
        """PutMessages: (partition, offset, error, message) per message, in order.

        A request refused as a whole (400: a message too large, ...) is split to find the messages refused,
        each answered with the error; 429 raises RestThrottled, 5xx and lost connections RestUnavailable."""
        info = self.streams.get(topic) or await self.stream(topic)
        if info is None:
            raise MirrorError(f"stream {topic} does not exist in pool {self.pool_id}")
        try:
            return await self._put(info["id"], msgs)
        except RestRefused as e:
            if e.status == 429:
                raise RestThrottled(1.0) from None
            if e.status >= 500:
                raise RestUnavailable(str(e)) from None
            if len(msgs) == 1:
                return [(-1, -1, e.code or f"HTTP{e.status}", e.message)]
            half = len(msgs) // 2
            return [*await self.put(topic, msgs[:half]), *await self.put(topic, msgs[half:])]

    async def _put(self, stream_id: str, msgs: list[tuple[bytes | None, bytes]]) -> list[Any]:
        if self._sdk is not None:
            m = self._oci.streaming.models
            details = m.PutMessagesDetails(
                messages=[m.PutMessagesDetailsEntry(key=_b64(k), value=_b64(v)) for k, v in msgs]
            )
            data = await self._sdk_call(self._sdk.put_messages, stream_id, details)
            return [
                (
                    int(e.partition) if e.partition is not None else -1,
                    int(e.offset) if e.offset is not None else -1,
                    e.error,
                    e.error_message,
                )
                for e in data.entries
            ]
        body = {"messages": [{"key": _b64(k), "value": _b64(v)} for k, v in msgs]}
        data = await self._http("POST", f"/streams/{stream_id}/messages", body)
        return [
            (
                int(e["partition"]) if e.get("partition") is not None else -1,
                int(e.get("offset", -1) if e.get("offset") is not None else -1),
                e.get("error"),
                e.get("errorMessage"),
            )
            for e in data["entries"]
        ]

    async def read(
        self, topic: str, partition: int, offset: int, limit: int = 10_000
    ) -> list[tuple[int, bytes | None, bytes | None]]:
        """Up to ``limit`` messages of one partition from ``offset`` (a cursor AT_OFFSET, one GetMessages):
        (offset, key, value) each; empty at the end of the partition. A 429 (OCI allows 5 GetMessages a
        second per partition) is waited out."""
        delay = 0.25
        for _ in range(120):
            try:
                return await self._read(topic, partition, offset, limit)
            except RestRefused as e:
                if e.status != 429:
                    raise
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 1.5)
        raise RestUnavailable(f"GetMessages on {topic}/{partition} kept being throttled")

    async def _read(
        self, topic: str, partition: int, offset: int, limit: int
    ) -> list[tuple[int, bytes | None, bytes | None]]:
        info = self.streams.get(topic) or await self.stream(topic)
        if info is None:
            raise MirrorError(f"stream {topic} does not exist in pool {self.pool_id}")
        sid = info["id"]
        if self._sdk is not None:
            m = self._oci.streaming.models
            details = m.CreateCursorDetails(partition=str(partition), type="AT_OFFSET", offset=offset)
            cursor = (await self._sdk_call(self._sdk.create_cursor, sid, details)).value
            msgs = await self._sdk_call(self._sdk.get_messages, sid, cursor, limit=limit)
            return [(int(x.offset), _unb64(x.key), _unb64(x.value)) for x in msgs]
        body = {"partition": str(partition), "type": "AT_OFFSET", "offset": offset}
        cursor = (await self._http("POST", f"/streams/{sid}/cursors", body))["value"]
        msgs = await self._http(
            "GET", f"/streams/{sid}/messages", params={"cursor": cursor, "limit": str(limit)}
        )
        return [(int(x["offset"]), _unb64(x.get("key")), _unb64(x.get("value"))) for x in msgs]

    # -------------------------------------------------------------- transport

    async def _sdk_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return (await asyncio.to_thread(fn, *args, **kwargs)).data
        except self._oci.exceptions.ServiceError as e:
            raise RestRefused(int(e.status), str(e.code), str(e.message)) from None
        except (self._oci.exceptions.RequestException, OSError) as e:
            raise RestUnavailable(str(e)) from None

    async def _http(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        import aiohttp

        session = self._session
        if session is None:
            raise MirrorError(f"the OCI Streaming target {self.url} is not open")
        try:
            async with session.request(method, self.url + API + path, json=body, params=params) as resp:
                data = await resp.json(content_type=None) if resp.content_length != 0 else None
                if resp.status >= 400:
                    code = data.get("code", "") if isinstance(data, dict) else ""
                    message = data.get("message", "") if isinstance(data, dict) else ""
                    raise RestRefused(resp.status, code, message)
                return data
        except aiohttp.ClientError as e:
            raise RestUnavailable(f"{method} {path}: {e}") from None
