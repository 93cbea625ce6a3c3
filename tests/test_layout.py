"""The shape of the house: one direction of dependency, and a pure protocol package."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# protocol/ may import only these third-party packages (and the standard library minus I/O).
PROTOCOL_ALLOWED_THIRD_PARTY = {"pydantic", "cryptography", "rfc8785", "pybase64"}
PROTOCOL_FORBIDDEN_STDLIB = {
    "socket",
    "http",
    "urllib",
    "ssl",
    "subprocess",
    "sqlite3",
    "os",
    "pathlib",
    "shutil",
    "tempfile",
    "io",
    "time",
    "asyncio",
    "requests",
    "httpx",
    "sqlalchemy",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _package_imports(package: str) -> dict[Path, set[str]]:
    return {p: _imports(p) for p in (REPO / package).rglob("*.py")}


def test_agent_never_imports_aggregator() -> None:
    offenders = [
        str(p)
        for p, mods in _package_imports("agent").items()
        if "aggregator" in mods and p.name != "demo.py"
    ]
    assert offenders == []


def test_aggregator_never_imports_agent() -> None:
    offenders = [str(p) for p, mods in _package_imports("aggregator").items() if "agent" in mods]
    assert offenders == []


def test_protocol_imports_only_pure_dependencies() -> None:
    import sys

    stdlib = set(sys.stdlib_module_names)
    for path, mods in _package_imports("protocol").items():
        third_party = {m for m in mods if m not in stdlib and m != "protocol"}
        assert third_party <= PROTOCOL_ALLOWED_THIRD_PARTY, (path, third_party)
        assert not (mods & PROTOCOL_FORBIDDEN_STDLIB), (path, mods & PROTOCOL_FORBIDDEN_STDLIB)
        assert "agent" not in mods and "aggregator" not in mods


CLOCK_READS = (
    "datetime.now",
    "datetime.utcnow",
    "datetime.today",
    "date.today",
    "time.time",
    "time.monotonic",
    "time.perf_counter",
    "time.time_ns",
)


def test_protocol_never_reads_the_clock() -> None:
    # `now` is passed in; a clock read would make verification depend on when it runs.
    offenders = []
    for path in (REPO / "protocol").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute):
                dotted = ast.unparse(node)
                if any(dotted == c or dotted.endswith("." + c) for c in CLOCK_READS):
                    offenders.append(f"{path.name}:{node.lineno}: {dotted}")
    assert offenders == []
