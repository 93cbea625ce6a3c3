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


def test_agent_never_imports_aggregator_or_demo() -> None:
    offenders = [
        str(p) for p, mods in _package_imports("agent").items() if mods & {"aggregator", "demo"}
    ]
    assert offenders == []


def test_aggregator_never_imports_agent_or_demo() -> None:
    offenders = [
        str(p) for p, mods in _package_imports("aggregator").items() if mods & {"agent", "demo"}
    ]
    assert offenders == []


# A build tool kept beside the data it builds (it reads and writes files), not protocol code.
PROTOCOL_BUILD_TOOLS = {REPO / "protocol" / "catalogues" / "build.py"}


def test_protocol_imports_only_pure_dependencies() -> None:
    import sys

    stdlib = set(sys.stdlib_module_names)
    for path, mods in _package_imports("protocol").items():
        assert "agent" not in mods and "aggregator" not in mods and "demo" not in mods
        if path in PROTOCOL_BUILD_TOOLS:
            continue
        third_party = {m for m in mods if m not in stdlib and m != "protocol"}
        assert third_party <= PROTOCOL_ALLOWED_THIRD_PARTY, (path, third_party)
        assert not (mods & PROTOCOL_FORBIDDEN_STDLIB), (path, mods & PROTOCOL_FORBIDDEN_STDLIB)
        assert "protocol.catalogues.build" not in _agent_modules(path), path


# The agent's rooms, inner first: a module may import its own room and the rooms before it,
# never one after it (so the engine cannot reach the outbound path, nor the home the engine).
AGENT_LAYERS = [
    {"agent", "agent.errors", "agent.library"},
    {"agent.home"},
    {"agent.periods"},
    {"agent.sources"},
    {"agent.engine"},
    {"agent.outbound"},
    {"agent.commands", "agent.cli", "agent.entry", "agent.__main__"},
]


def _agent_modules(path: Path) -> set[str]:
    """Every fedqi module ``path`` imports (lazy imports too), as dotted names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                parts = path.relative_to(REPO).with_suffix("").parts[: -node.level]
                base = ".".join([*parts, node.module])
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _agent_layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching prefix, layer)
    for i, names in enumerate(AGENT_LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > best[0]
            ):
                best = (len(name), i)
    return None if best is None else best[1]


def test_agent_rooms_import_inwards_only() -> None:
    offenders = []
    for path in (REPO / "agent").rglob("*.py"):
        own = _agent_layer(".".join(path.relative_to(REPO).with_suffix("").parts))
        assert own is not None, path
        for module in _agent_modules(path):
            layer = _agent_layer(module) if module.startswith("agent") else None
            if layer is not None and layer > own:
                offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert offenders == []


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
