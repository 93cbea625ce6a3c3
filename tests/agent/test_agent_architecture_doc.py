"""docs/architecture.md draws the agent's rooms as they are: every module in its tree exists in
the room it is drawn in, and every module of the agent is drawn."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _drawn_tree() -> dict[str, set[str]]:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## agent/", 1)[1]
    block = section.split("```", 2)[1]
    rooms: dict[str, set[str]] = {"": set()}
    room = ""
    for line in block.splitlines()[1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        words = line.split()
        if indent == 2 and words[0].endswith("/"):
            room = words[0].rstrip("/")
            rooms.setdefault(room, set())
            words = words[1:]
        elif indent == 2:
            room = ""
        for word in words:
            if re.fullmatch(r"[a-z_]+\.py", word):
                rooms[room].add(word)
    return rooms


def test_every_drawn_module_exists_where_it_is_drawn() -> None:
    for room, modules in _drawn_tree().items():
        for module in modules:
            assert (REPO / "agent" / room / module).is_file(), f"agent/{room}/{module}"


def test_every_agent_module_is_drawn() -> None:
    drawn = {(room, m) for room, modules in _drawn_tree().items() for m in modules}
    for path in (REPO / "agent").rglob("*.py"):
        rel = path.relative_to(REPO / "agent")
        if path.name.startswith("_") or rel.parts[0] == "commands":
            continue  # package markers; commands/ is drawn as one room
        room = "" if len(rel.parts) == 1 else rel.parts[0]
        assert (room, path.name) in drawn, f"agent/{rel} is not in docs/architecture.md"
