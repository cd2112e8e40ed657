"""kafkite's layering stays honest: no import of a kafkite module inside a function unless it is on the list
below, each entry with its reason; and the reasons hold (what is kept lazy is really not loaded).

import-linter (``lint-imports``, the contract in pyproject.toml) checks the direction of the imports; this
checks where they sit: an import inside a function hides a dependency from the reader and can hide a cycle
that would break ``import kafkite.x`` on its own.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kafkite

PACKAGE = Path(kafkite.__file__).resolve().parent

OPTIONAL_POSTGRESQL = (
    "needs the optional PostgreSQL driver (psycopg): loaded only for storage.engine=postgresql"
)
NOT_IN_VERSION = "a subcommand's own code: `kafkite --version` and the other subcommands do without it"

# (module, imported module) pairs that may be imported inside a function, and why.
LAZY: dict[tuple[str, str], str] = {
    ("kafkite.broker.core", "kafkite.log.pg"): OPTIONAL_POSTGRESQL,
    ("kafkite.compose", "kafkite.cluster"): OPTIONAL_POSTGRESQL,
    ("kafkite.cli", "kafkite.startup"): "the broker is loaded by `kafkite serve` only, " + NOT_IN_VERSION,
    ("kafkite.cli", "kafkite.metrics.logfmt"): "`kafkite serve`'s logging, " + NOT_IN_VERSION,
    ("kafkite.migrate.cli", "kafkite.migrate.commands"): "the migrate subcommands, " + NOT_IN_VERSION,
    ("kafkite.bench.cli", "kafkite.bench.report"): "the benchmark's report, " + NOT_IN_VERSION,
    ("kafkite.tools.produce", "kafkite.streaming.messages"): "keyed records only, " + NOT_IN_VERSION,
    ("kafkite.embedded", "kafkite.startup"): "kafkite.embedded stays cheap: the broker loads on start",
    ("kafkite.pytest_plugin", "kafkite.embedded"): (
        "pytest loads the plugin in every suite where kafkite is installed: the broker only when a test asks"
    ),
    ("kafkite.startup", "kafkite.console.server"): "aiohttp and the console only with console.listener",
    ("kafkite.migrate.telemetry", "kafkite.server.metrics_http"): (
        "aiohttp only when the mirror's metrics listener is asked for"
    ),
    ("kafkite.client", "kafkite.protocol.records"): (
        "the record codecs and compression libraries only for the client's transactional producer"
    ),
    ("kafkite.streaming.namespace", "kafkite.streaming.groups"): (
        "the offset store only for a stream pool at its group limit, not at the broker's start-up"
    ),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules an import statement loads (``from a import b`` loads a.b when that is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    out = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]
    return list(dict.fromkeys(out))


def function_level_imports() -> Iterator[tuple[str, str, str]]:
    """(module, imported kafkite module, "file:line") for every kafkite import inside a function body."""
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        inside: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                inside.update(id(n) for n in ast.walk(fn) if n is not fn)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) in inside:
                for target in _targets(node, module, path.name == "__init__.py"):
                    if target == "kafkite" or target.startswith("kafkite."):
                        yield module, target, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"


def test_the_scan_sees_imports_inside_functions() -> None:
    found = {(m, t) for m, t, _ in function_level_imports()}
    assert ("kafkite.embedded", "kafkite.startup") in found
    tree = ast.parse("def f():\n    from .share import apis\n    from kafkite import cluster\n")
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert _targets(imports[0], "kafkite.broker.groups.coordinator", False) == [
        "kafkite.broker.groups.share.apis"
    ]
    assert _targets(imports[1], "kafkite.compose", False) == ["kafkite.cluster"]


def test_no_kafkite_import_inside_a_function_but_the_listed_lazy_ones() -> None:
    unlisted = [
        f"{where}: {module} imports {target}"
        for module, target, where in function_level_imports()
        if (module, target) not in LAZY
    ]
    assert not unlisted, (
        "move these imports to the top of the module (or under `if TYPE_CHECKING:`), fixing the dependency "
        "direction if that makes a cycle; list in LAZY only an optional dependency or a start-up time cost:\n"
        + "\n".join(unlisted)
    )


def test_every_lazy_entry_is_still_needed() -> None:
    found = {(m, t) for m, t, _ in function_level_imports()}
    stale = sorted(set(LAZY) - found)
    assert not stale, f"no longer imported inside a function, remove from LAZY: {stale}"
    assert all(reason.strip() for reason in LAZY.values())


_LOADED = """
import json, sys
{code}
print("@@" + json.dumps(sorted(sys.modules)))
"""


def _loaded_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _LOADED.format(code=code)], capture_output=True, text=True, timeout=120
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@")]
    assert lines, done.stderr
    return set(json.loads(lines[-1][2:]))


def test_the_lazy_imports_keep_what_they_say_out() -> None:
    """Each reason in LAZY is true: what stays lazy is not loaded where the reason says it is not."""
    version = _loaded_after(
        "from kafkite.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass"
    )
    for name in (
        "kafkite.startup",
        "kafkite.metrics.logfmt",
        "kafkite.migrate.commands",
        "kafkite.bench.report",
        "kafkite.streaming.messages",
        "kafkite.log.pg",
        "psycopg",
        "aiohttp",
    ):
        assert name not in version, f"`kafkite --version` loads {name}"
    assert "kafkite.startup" not in _loaded_after("import kafkite.embedded")
    assert "kafkite.embedded" not in _loaded_after("import kafkite.pytest_plugin")
    assert "kafkite.protocol.records" not in _loaded_after("import kafkite.client")
    assert "aiohttp" not in _loaded_after("import kafkite.migrate.commands")
    started = _loaded_after(
        "from kafkite.embedded import EmbeddedBroker\nEmbeddedBroker(engine='memory').start().stop()"
    )
    assert "kafkite.startup" in started
    for name in ("kafkite.log.pg", "kafkite.cluster", "psycopg", "kafkite.console.server", "aiohttp"):
        assert name not in started, f"the embedded broker's start loads {name}"
    assert "kafkite.streaming.groups" not in started
