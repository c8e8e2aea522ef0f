"""The house's rules, checked on the source: layers only import downwards, ``domain`` and
``events`` import no driver or serialiser, and every import goes through the one namespace.

Read from the files with ``ast`` (nothing is imported), so a lazy import inside a function
counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "events", "projections", "adapters")

# Lowest first. A module may import its own layer's package and any layer below it, never one
# above; layers that share a row are siblings and may not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("sessionstore.events",),
    ("sessionstore.domain",),
    ("sessionstore.projections",),
    ("sessionstore.adapters.settings",),
    ("sessionstore.adapters.storage",),
    ("sessionstore.adapters.audit", "sessionstore.adapters.kafka"),
    ("sessionstore.adapters.bootstrap",),
    ("sessionstore.adapters.demo", "sessionstore.adapters.http"),
    ("sessionstore.adapters.cli",),
    ("sessionstore",),
)

# What the core may import besides the standard library and its own lower layers: no database
# driver, broker client, HTTP framework or serialiser (the design card's rule).
CORE_THIRD_PARTY = frozenset({"pydantic", "pydantic_core"})  # pydantic_core: pydantic's own engine
FORBIDDEN_IN_CORE = frozenset(
    {"psycopg", "psycopg_pool", "sqlite3", "kafka", "orjson", "fastapi", "starlette", "uvicorn"}
    | {"httpx", "eventsourcing", "typer", "rich", "prometheus_client", "cryptography"}
)


def _modules() -> Iterator[tuple[str, Path]]:
    yield "sessionstore", ROOT / "sessionstore" / "__init__.py"
    yield "sessionstore.__main__", ROOT / "sessionstore" / "__main__.py"
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(("sessionstore", *parts)), path


def _imports(path: Path, module: str) -> Iterator[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            yield name
            # `from sessionstore.adapters import audit` imports the sub-package audit.
            yield from (f"{name}.{alias.name}" for alias in node.names)


# Package __init__ modules that only hold a docstring: importing from them is importing a
# sub-module, so they sit at the bottom of what they contain.
NAMESPACES = {"sessionstore.adapters": 3}


def _layer(name: str) -> tuple[int, str] | None:
    """(row, layer prefix) of a sessionstore module, the most specific prefix winning."""
    if name in NAMESPACES:
        return NAMESPACES[name], name
    best: tuple[int, str] | None = None
    for row, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[1])
            ):
                best = (row, prefix)
    return best


MODULES = list(_modules())


def test_every_package_module_is_found() -> None:
    names = {name for name, _ in MODULES}
    assert {"sessionstore.domain.store", "sessionstore.adapters.bootstrap"} <= names
    assert all(_layer(name) is not None for name in names), sorted(
        n for n in names if _layer(n) is None
    )


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_only_go_down_the_layers(module: str, path: Path) -> None:
    own = _layer(module)
    assert own is not None
    wrong = []
    for name in set(_imports(path, module)):
        if not name.startswith("sessionstore"):
            continue
        target = _layer(name)
        if target is None or name == "sessionstore":
            # `from sessionstore import x` is the facade: only the facade itself may use it.
            if module != "sessionstore" and name.split(".")[0] == "sessionstore":
                wrong.append(f"{name} (the public facade; import the module that defines it)")
            continue
        above = target[0] > own[0]
        sibling = target[0] == own[0] and target[1] != own[1] and name not in NAMESPACES
        if above or sibling:
            wrong.append(f"{name} ({'a layer above' if above else 'a sibling layer'})")
    assert not wrong, f"{module} imports {sorted(wrong)}"


@pytest.mark.parametrize(
    ("module", "path"),
    [(m, p) for m, p in MODULES if m.startswith(("sessionstore.domain", "sessionstore.events"))],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_domain_and_events_import_no_driver(module: str, path: Path) -> None:
    outside = {
        name.split(".")[0]
        for name in _imports(path, module)
        if name and not name.startswith("sessionstore")
    }
    forbidden = outside & FORBIDDEN_IN_CORE
    unknown = outside - set(sys.stdlib_module_names) - CORE_THIRD_PARTY - FORBIDDEN_IN_CORE
    assert not forbidden, f"{module} imports {sorted(forbidden)}"
    assert not unknown, f"{module} imports {sorted(unknown)}: not stdlib or pydantic"


def _python_files() -> Iterator[Path]:
    for folder in (*PACKAGES, "sessionstore", "tests", "bench"):
        yield from (ROOT / folder).rglob("*.py")


def test_nothing_imports_the_folders_outside_the_namespace() -> None:
    """``import domain`` would load a second copy of every module beside ``sessionstore.domain``
    (two SessionNotFound classes that do not catch each other); the wheel has no ``domain``."""
    wrong = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            wrong += [
                f"{path.relative_to(ROOT)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in PACKAGES
            ]
    assert not wrong


def test_the_facade_exports_what_it_lists() -> None:
    import sessionstore

    missing = [name for name in sessionstore.__all__ if not hasattr(sessionstore, name)]
    assert not missing
    assert {"open_store", "open_queries", "migrate", "SessionStore", "SessionNotFound"} <= set(
        sessionstore.__all__
    )
