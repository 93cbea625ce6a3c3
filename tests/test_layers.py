"""The layers of the house point one way (docs/architecture.md): every import of every module,
read with ``ast`` (top-level and inside functions, relative imports resolved), is checked
against the rules below. A new import that points the wrong way fails here, naming the file,
the line and the module it imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: The aggregator's domain packages: the inner layer. ``aggregator.web`` (the FastAPI app,
#: middleware and dashboard) and ``aggregator.cli`` are the outer layer that uses them.
DOMAIN = (
    "aggregator.benchmarks",
    "aggregator.catalogues",
    "aggregator.db",
    "aggregator.igpack",
    "aggregator.log",
    "aggregator.practices",
    "aggregator.submissions",
    "aggregator.users",
)
OUTER = ("aggregator.web", "aggregator.cli")


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in ``path``; ``from X import y`` counts as
    both ``X`` and ``X.y`` (``y`` may be a submodule)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def offenders(sources: tuple[str, ...], forbidden: tuple[str, ...], root: Path = REPO) -> list[str]:
    out = []
    for source in sources:
        base = root / source.replace(".", "/")
        paths = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        for path in paths:
            for line, module in imports(path, root):
                if within(module, forbidden):
                    out.append(f"{path.relative_to(root)}:{line} imports {module}")
    return sorted(set(out))


def test_protocol_imports_nothing_of_agent_or_aggregator() -> None:
    assert offenders(("protocol",), ("agent", "aggregator")) == []


def test_agent_never_imports_aggregator() -> None:
    # The demo drives both as separate processes and may name both (docs/architecture.md).
    found = [o for o in offenders(("agent",), ("aggregator",)) if "demo" not in o.split(":")[0]]
    assert found == []


def test_aggregator_never_imports_agent() -> None:
    assert offenders(("aggregator",), ("agent",)) == []


@pytest.mark.parametrize("package", DOMAIN)
def test_aggregator_domain_never_imports_the_outer_layer(package: str) -> None:
    assert offenders((package,), OUTER) == []


def test_the_check_sees_relative_and_function_level_imports(tmp_path: Path) -> None:
    """The checker itself: a domain module importing the web layer relatively, inside a
    function, is caught with its file and line."""
    pkg = tmp_path / "aggregator" / "log"
    pkg.mkdir(parents=True)
    (tmp_path / "aggregator" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("import json\n\n\ndef f():\n    from ..web import deps\n")
    assert offenders(("aggregator.log",), OUTER, tmp_path) == [
        "aggregator/log/bad.py:5 imports aggregator.web",
        "aggregator/log/bad.py:5 imports aggregator.web.deps",
    ]
