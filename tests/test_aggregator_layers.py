"""The aggregator's layers point one way: ``web/`` (the API routers and the dashboard) and the
command line are the outer layer; the domain rooms (submissions, practices, log, users,
benchmarks, catalogues, igpack) and the shared inner modules (db, settings, errors, runtime)
never import from ``aggregator.web`` (docs/architecture.md, "Aggregator layers")."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AGGREGATOR = REPO / "aggregator"
OUTER = {"web", "cli.py", "entry.py", "migrations"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute_imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved to absolute names."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    return _resolve(path.read_text(), package)


def _resolve(source: str, package: list[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def _inner_modules() -> list[Path]:
    return [p for p in AGGREGATOR.rglob("*.py") if p.relative_to(AGGREGATOR).parts[0] not in OUTER]


def test_the_domain_never_imports_the_web_layer() -> None:
    inner = _inner_modules()
    assert len(inner) > 20  # the walk found the rooms
    offenders = {
        str(p.relative_to(REPO)): sorted(
            m for m in _absolute_imports(p) if m.startswith("aggregator.web")
        )
        for p in inner
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_a_relative_import_of_the_web_layer() -> None:
    """The resolver is what the test leans on: in a domain room, ``from ..web.deps import x``
    and ``from .. import web`` are imports of the web layer; ``from ..db import models`` is not."""
    room = ["aggregator", "submissions"]
    assert "aggregator.web.deps" in _resolve("from ..web.deps import current_user\n", room)
    assert "aggregator.web" in _resolve("from .. import web\n", room)
    assert not any(
        m.startswith("aggregator.web") for m in _resolve("from ..db import models\n", room)
    )
    assert "aggregator.db.models" in _absolute_imports(AGGREGATOR / "submissions" / "service.py")


def test_every_router_lives_in_the_web_layer() -> None:
    """An ``APIRouter`` is made only under ``aggregator/web/``."""
    makers = [str(p.relative_to(REPO)) for p in _inner_modules() if "APIRouter(" in p.read_text()]
    assert makers == []
