"""The ``oci`` CLI (package oci-cli) against kafkite with ``--endpoint``: create a stream, put and get."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_streaming_support import COMPARTMENT, TENANCY, USER, InProcessBroker, make_api_key

OCI_CLI = shutil.which("oci", path=str(Path(sys.executable).parent)) or shutil.which("oci")
pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(OCI_CLI is None, reason="the oci CLI (pip install oci-cli) is not installed"),
]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[InProcessBroker]:
    _, public, _ = make_api_key(tmp_path)
    with InProcessBroker(
        tmp_path / "data", "streaming.auth.enable=true", f"streaming.auth.public.keys={public}"
    ) as b:
        yield b


@pytest.fixture
def oci_cli(tmp_path: Path, broker: InProcessBroker) -> Any:
    private = tmp_path / "oci_api_key.pem"
    fp = _fingerprint(tmp_path / "oci_api_key_public.pem")
    config = tmp_path / "oci_config"
    config.write_text(
        f"[DEFAULT]\nuser={USER}\nfingerprint={fp}\nkey_file={private}\ntenancy={TENANCY}\nregion=us-phoenix-1\n"
    )
    config.chmod(0o600)
    private.chmod(0o600)
    env = dict(os.environ, OCI_CLI_SUPPRESS_FILE_PERMISSIONS_WARNING="True", SUPPRESS_LABEL_WARNING="True")

    def run(*args: str) -> Any:
        assert OCI_CLI is not None
        cmd = [OCI_CLI, "--config-file", str(config), "--endpoint", broker.rest_url, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 0, f"{' '.join(args)} failed: {proc.stderr}"
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    return run


def _fingerprint(public: Path) -> str:
    from kafkite.streaming.auth import load_public_key

    return load_public_key(public.read_text()).fingerprint


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_cli_stream_create_put_get(oci_cli: Any) -> None:
    created = oci_cli(
        "streaming", "admin", "stream", "create", "--name", "cli-stream", "--partitions", "1",
        "--compartment-id", COMPARTMENT,
    )["data"]  # fmt: skip
    assert created["name"] == "cli-stream" and created["partitions"] == 1
    stream_id = created["id"]
    got = oci_cli("streaming", "admin", "stream", "get", "--stream-id", stream_id)["data"]
    assert got["lifecycle-state"] == "ACTIVE"

    messages = json.dumps([{"key": b64(f"k{i}"), "value": b64(f"hello {i}")} for i in range(3)])
    put = oci_cli("streaming", "stream", "message", "put", "--stream-id", stream_id, "--messages", messages)
    assert put["data"]["failures"] == 0
    assert [e["offset"] for e in put["data"]["entries"]] == [0, 1, 2]

    cursor = oci_cli(
        "streaming", "stream", "cursor", "create-cursor", "--stream-id", stream_id, "--partition", "0",
        "--type", "TRIM_HORIZON",
    )["data"]["value"]  # fmt: skip
    msgs = oci_cli("streaming", "stream", "message", "get", "--stream-id", stream_id, "--cursor", cursor)[
        "data"
    ]
    assert [base64.b64decode(m["value"]).decode() for m in msgs] == ["hello 0", "hello 1", "hello 2"]
    listed = oci_cli("streaming", "admin", "stream", "list", "--compartment-id", COMPARTMENT, "--all")["data"]
    assert [s["name"] for s in listed] == ["cli-stream"]
