"""Parser for kafkite's compact protocol specs (see protocol_specs/README.md for the format)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

PRIMITIVES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint16",
        "uint32",
        "float64",
        "string",
        "bytes",
        "records",
        "uuid",
    }
)
MAX_VERSION = 0x7FFF


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class Versions:
    lo: int
    hi: int

    @classmethod
    def parse(cls, text: str) -> Versions:
        if text == "none":
            return cls(1, 0)
        try:
            if text.endswith("+"):
                return cls(int(text[:-1]), MAX_VERSION)
            if "-" in text:
                lo, hi = text.split("-", 1)
                return cls(int(lo), int(hi))
            v = int(text)
        except ValueError:
            raise SpecError(f"bad version range {text!r}") from None
        return cls(v, v)

    def __contains__(self, version: object) -> bool:
        return isinstance(version, int) and self.lo <= version <= self.hi

    def __iter__(self) -> Any:
        return iter(range(self.lo, self.hi + 1))

    def __str__(self) -> str:
        if self.lo > self.hi:
            return "none"
        if self.hi == MAX_VERSION:
            return f"{self.lo}+"
        return f"{self.lo}-{self.hi}" if self.lo != self.hi else str(self.lo)


@dataclass
class FieldSpec:
    name: str
    type: str  # a primitive, "[]" (array of structs), "{}" (struct) or "[]<primitive>"
    versions: Versions
    nullable: Versions = field(default_factory=lambda: Versions(1, 0))
    tag: int | None = None
    default: Any = None
    has_default: bool = False
    noflex: bool = False
    fields: list[FieldSpec] = field(default_factory=list)

    @property
    def is_struct_array(self) -> bool:
        return self.type == "[]"

    @property
    def is_struct(self) -> bool:
        return self.type == "{}"

    @property
    def element_type(self) -> str | None:
        return self.type[2:] if self.type.startswith("[]") and len(self.type) > 2 else None


@dataclass
class MessageSpec:
    name: str
    api_key: int  # -1 for headers
    versions: Versions
    flexible: Versions
    fields: list[FieldSpec]


@dataclass
class ApiSpec:
    name: str
    key: int
    versions: Versions
    flexible: Versions
    request: MessageSpec
    response: MessageSpec


def _parse_default(raw: str) -> Any:
    if raw == "null":
        return None
    if raw == "true":
        return True
    if raw == "false":
        return False
    try:
        return int(raw, 0)
    except ValueError:
        return raw


def _parse_field(line: str, where: str) -> FieldSpec:
    parts = line.split()
    if len(parts) < 3:
        raise SpecError(f"{where}: a field needs NAME TYPE VERSIONS: {line.strip()!r}")
    name, typ, vers, *flags = parts
    if not (typ in PRIMITIVES or typ in ("[]", "{}") or (typ.startswith("[]") and typ[2:] in PRIMITIVES)):
        raise SpecError(f"{where}: unknown type {typ!r}")
    f = FieldSpec(name=name, type=typ, versions=Versions.parse(vers))
    for flag in flags:
        key, _, val = flag.partition("=")
        if key == "nullable":
            f.nullable = Versions.parse(val) if val else f.versions
        elif key == "tag":
            f.tag = int(val)
        elif key == "default":
            f.default = _parse_default(val)
            f.has_default = True
        elif key == "noflex":
            f.noflex = True
        else:
            raise SpecError(f"{where}: unknown flag {flag!r}")
    return f


def parse(text: str, source: str = "<spec>") -> list[MessageSpec]:
    """Parse one spec file into its messages (request and response, or the two headers)."""
    messages: list[MessageSpec] = []
    name = ""
    key = -1
    versions = Versions(0, 0)
    flexible = Versions(1, 0)
    current: MessageSpec | None = None
    stack: list[tuple[int, list[FieldSpec]]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        where = f"{source}:{lineno}"
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        words = line.split()
        if indent == 0:
            if words[0] in ("api", "header"):
                kw = dict(w.split("=", 1) for w in words[2:])
                name = words[1]
                key = int(kw.get("key", "-1"))
                versions = Versions.parse(kw["versions"])
                flexible = Versions.parse(kw.get("flexible", "none"))
            elif words[0] in ("request", "response") and len(words) == 1:
                suffix = "Request" if words[0] == "request" else "Response"
                current = MessageSpec(name + suffix, key, versions, flexible, [])
                messages.append(current)
                stack = [(0, current.fields)]
            else:
                raise SpecError(f"{where}: unexpected {line!r}")
            continue
        if current is None:
            raise SpecError(f"{where}: field outside a request or response section")
        while stack and indent <= stack[-1][0] and len(stack) > 1:
            stack.pop()
        parent_indent, siblings = stack[-1]
        if indent <= parent_indent and len(stack) > 1:
            raise SpecError(f"{where}: bad indentation")
        f = _parse_field(line, where)
        siblings.append(f)
        if f.type in ("[]", "{}"):
            stack.append((indent, f.fields))
    return messages


SPECS_PACKAGE = "kafkite.protocol_specs"  # protocol_specs/ of the source tree, installed as package data


def specs_dir() -> Traversable:
    """Where the spec files are: ``KAFKITE_SPECS_DIR``, else the ``kafkite.protocol_specs`` package data (a
    wheel or an editable install), else ``protocol_specs/`` beside the ``kafkite`` package (a source tree)."""
    env = os.environ.get("KAFKITE_SPECS_DIR")
    if env:
        return Path(env)
    try:
        packaged = resources.files(SPECS_PACKAGE)
    except ModuleNotFoundError:
        packaged = None
    if packaged is not None and packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "protocol_specs"
    if checkout.is_dir():
        return checkout
    installed = Path(__file__).resolve().parents[1] / "protocol_specs"
    raise SpecError(
        f"the protocol specs are missing: no {installed} (the {SPECS_PACKAGE} package data); "
        "reinstall kafkite, or set KAFKITE_SPECS_DIR to a protocol_specs directory"
    )


@cache
def load_all() -> tuple[dict[int, ApiSpec], dict[str, MessageSpec]]:
    """All API specs by key, and the headers by name ("RequestHeader", "ResponseHeader")."""
    apis: dict[int, ApiSpec] = {}
    headers: dict[str, MessageSpec] = {}
    files = sorted((f for f in specs_dir().iterdir() if f.name.endswith(".spec")), key=lambda f: f.name)
    for path in files:
        stem = path.name.removesuffix(".spec")
        msgs = parse(path.read_text(encoding="utf-8"), path.name)
        if stem == "Headers":
            for m in msgs:
                headers["RequestHeader" if m.name.startswith("Request") else "ResponseHeader"] = m
            continue
        req = next((m for m in msgs if m.name.endswith("Request")), None)
        resp = next((m for m in msgs if m.name.endswith("Response")), None)
        if req is None or resp is None:
            raise SpecError(f"{path.name}: needs both a request and a response section")
        if req.api_key in apis:
            raise SpecError(f"{path.name}: api key {req.api_key} defined twice")
        apis[req.api_key] = ApiSpec(stem, req.api_key, req.versions, req.flexible, req, resp)
    return apis, headers
