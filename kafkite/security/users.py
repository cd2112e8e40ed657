"""The user store: salted SCRAM credentials kept on disk in the data directory (``users.json``, mode 0600).

One file holds every user's credentials per mechanism (salt, iterations, stored key, server key; never a
password). ``kafkite user add|list|delete`` and the AlterUserScramCredentials API both change it; a running
broker notices changes made by the command line (it re-reads the file when its modification time changes).
Writes take an exclusive lock on ``users.json.lock`` and replace the file atomically.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kafkite.security.scram import HASHES, ScramCredential, make_credential, password_matches

USERS_FILE = "users.json"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _cred_to_json(c: ScramCredential) -> dict[str, Any]:
    return {
        "salt": _b64(c.salt),
        "iterations": c.iterations,
        "stored_key": _b64(c.stored_key),
        "server_key": _b64(c.server_key),
    }


def _cred_from_json(d: dict[str, Any]) -> ScramCredential:
    return ScramCredential(
        base64.b64decode(d["salt"]),
        int(d["iterations"]),
        base64.b64decode(d["stored_key"]),
        base64.b64decode(d["server_key"]),
    )


class UserStore:
    """Users and their SCRAM credentials; ``path`` None keeps them in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._users: dict[str, dict[str, ScramCredential]] = {}
        self._stamp: tuple[int, int] | None = None
        self._mutex = threading.Lock()
        self._reload()

    @classmethod
    def in_dir(cls, data_dir: Path) -> UserStore:
        return cls(Path(data_dir) / USERS_FILE)

    # ------------------------------------------------------------------ reading

    def _file_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _reload(self) -> None:
        if self.path is None:
            return
        stamp = self._file_stamp()
        if stamp == self._stamp and stamp is not None:
            return
        self._users = self._read() if stamp is not None else {}
        self._stamp = stamp

    def _read(self) -> dict[str, dict[str, ScramCredential]]:
        assert self.path is not None
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.path}: unreadable user store: {e}") from None
        users: dict[str, dict[str, ScramCredential]] = {}
        for name, mechs in (raw.get("users") or {}).items():
            users[name] = {m: _cred_from_json(c) for m, c in mechs.items() if m in HASHES}
        return users

    def refresh(self) -> None:
        """Pick up changes made by another process."""
        with self._mutex:
            try:
                self._reload()
            except ValueError:
                pass  # keep the last good copy while a writer replaces the file

    def users(self) -> dict[str, dict[str, ScramCredential]]:
        self.refresh()
        return {u: dict(m) for u, m in self._users.items()}

    def credential(self, username: str, mechanism: str) -> ScramCredential | None:
        self.refresh()
        return self._users.get(username, {}).get(mechanism)

    def has_user(self, username: str) -> bool:
        self.refresh()
        return username in self._users

    def __len__(self) -> int:
        self.refresh()
        return len(self._users)

    def check_password(self, username: str, password: str) -> bool:
        """SASL/PLAIN against the store: the password must match one of the user's SCRAM credentials."""
        self.refresh()
        mechs = self._users.get(username)
        if not mechs:
            return False
        mechanism, cred = sorted(mechs.items())[0]
        return password_matches(mechanism, cred, password)

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            if self.path is None:
                yield
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                self._stamp = None
                self._reload()
                yield
                self._write()

    def _write(self) -> None:
        assert self.path is not None
        data = {
            "version": 1,
            "users": {
                u: {m: _cred_to_json(c) for m, c in sorted(mechs.items())}
                for u, mechs in sorted(self._users.items())
            },
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._stamp = self._file_stamp()

    def set_credential(self, username: str, mechanism: str, cred: ScramCredential) -> None:
        if not username:
            raise ValueError("empty user name")
        with self._locked():
            self._users.setdefault(username, {})[mechanism] = cred

    def add_user(
        self, username: str, password: str, mechanisms: list[str] | None = None, iterations: int = 8192
    ) -> None:
        """Create or replace ``username``'s credentials for each mechanism (both SCRAM ones by default)."""
        if not username:
            raise ValueError("empty user name")
        creds = {m: make_credential(m, password, iterations) for m in (mechanisms or sorted(HASHES))}
        with self._locked():
            self._users.setdefault(username, {}).update(creds)

    def delete_credential(self, username: str, mechanism: str) -> bool:
        with self._locked():
            mechs = self._users.get(username)
            if not mechs or mechanism not in mechs:
                return False
            del mechs[mechanism]
            if not mechs:
                del self._users[username]
            return True

    def delete_user(self, username: str) -> bool:
        with self._locked():
            return self._users.pop(username, None) is not None
