"""Every command shown in README.md and docs/*.md is checked against the program it names.

The command lines are extracted from the Markdown's fenced code blocks (continuation lines
joined, comments and prompts dropped). Each one is checked according to its program, and a
command this test does not know fails it, so a new kind of command in the docs needs a rule
here:

Inline code spans in the prose that start with one of the programs are commands too.

* ``fedqi-agent`` / ``fedqi-aggregator`` / ``fedqi-demo``: the (sub)command is run with
  ``--help``, which must succeed, and every ``--option`` the docs use must be one it lists.
* ``.venv/bin/python bench/X.py`` and ``python -m MODULE``: the same against the script's
  ``--help``; ``python -m protocol.catalogues.build --check`` and ``--help`` forms are run for real.
* ``make TARGET``: the target must exist in the Makefile.
* shell steps of the operations guide (``umask``, ``cp``, variables ...): that guide is run
  block by block against a real server by tests/deploy/test_operations.py; here they only have
  to be among the shell words listed below.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_WORDS = {
    "umask", "cp", "mv", "mkdir", "chmod", "export", "cd", "cat", "echo", "git", "curl",
    "docker", "sudo", "systemctl", "sqlite3", "psql", "pg_dump", "pg_restore", "openssl",
    "source", "ls", "rm", "test", "apt-get", "pip", "KID=$(fedqi-agent",
}  # fmt: skip
FENCE = re.compile(r"^```([A-Za-z]*)\n(.*?)^```", re.S | re.M)
PROGRAMS = ("fedqi-agent", "fedqi-aggregator", "fedqi-demo", "make", "python", ".venv/bin/")


def _commands(text: str) -> list[str]:
    out = []
    for lang, body in FENCE.findall(text):
        if lang not in ("", "sh", "bash", "console", "shell"):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for raw in joined.splitlines():
            line = raw.strip()
            if line.startswith("$ "):
                line = line[2:]
            line = re.sub(r"\s+#.*$", "", line) if not line.startswith("#") else ""
            if not line:
                continue
            first = line.split()[0]
            if first.startswith(PROGRAMS) or first in SHELL_WORDS or "=" in first:
                out.append(line)
    # Commands shown inline in the prose, e.g. `fedqi-agent preview --period YYYY-MM --local`.
    prose = FENCE.sub("", text)
    for span in re.findall(r"`((?:fedqi-agent|fedqi-aggregator|fedqi-demo|make) [^`]+)`", prose):
        out.append(re.sub(r"\s+", " ", span))
    return out


ALL = [
    (doc.relative_to(REPO).as_posix(), cmd) for doc in DOCS for cmd in _commands(doc.read_text())
]


@cache
def _help(argv: tuple[str, ...]) -> str:
    proc = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, f"{' '.join(argv)} --help failed: {proc.stderr[-500:]}"
    return proc.stdout


def _options(words: list[str]) -> list[str]:
    return [w.split("=")[0] for w in words if w.startswith("--") and len(w) > 2]


def _subcommand(program: str, words: list[str]) -> tuple[str, ...]:
    """The program and the subcommand words before the first option or argument that is not
    one of its listed commands (typer lists them in --help)."""
    argv = [str(BIN / program)]
    for word in words:
        if word.startswith("-"):
            break
        listed = _help(tuple(argv))
        if not re.search(rf"^\W*\s{re.escape(word)}\s", listed, re.M):
            break
        argv.append(word)
    return tuple(argv)


def _words(cmd: str) -> list[str]:
    """The command's words up to a redirection, pipe or ``&&`` (placeholders such as
    ``<token from the admin>`` become one word)."""
    lexer = shlex.shlex(re.sub(r"<[^<>]*>", "PLACEHOLDER", cmd), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word in (">", ">>", "|", "&&", ";", "<"):
            break
        words.append(word)
    return words


def check(doc: str, cmd: str) -> None:
    words = _words(cmd)
    first = words[0]
    guides = ("docs/operations.md", "docs/demo.md", "README.md", "docs/agent.md")
    if first in ("fedqi-agent", "fedqi-aggregator", "fedqi-demo"):
        argv = _subcommand(first, words[1:])
        listed = _help(argv)
        for opt in _options(words):
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", listed), (
                f"{doc}: `{cmd}` uses {opt}, which `{' '.join(Path(a).name for a in argv)} "
                "--help` does not list"
            )
    elif first.startswith(("python", ".venv/bin/python")) and words[1] == "-c":
        assert doc in guides, f"{doc}: inline Python `{cmd}` outside the guides tests follow"
    elif first.startswith(("python", ".venv/bin/python")):
        if words[1] == "-m":
            module = words[2]
            if module == "protocol.catalogues.build":
                proc = subprocess.run(
                    [sys.executable, "-m", module, *words[3:]], capture_output=True, text=True,
                    cwd=REPO, timeout=300,
                )  # fmt: skip
                assert proc.returncode == 0, f"{doc}: `{cmd}`: {proc.stderr[-500:]}"
                return
            argv: tuple[str, ...] = (sys.executable, "-m", module)
        else:
            script = REPO / words[1]
            assert script.is_file(), f"{doc}: `{cmd}` names {words[1]}, which does not exist"
            argv = (sys.executable, str(script))
        listed = _help(argv)
        for opt in _options(words):
            assert opt in listed, f"{doc}: `{cmd}` uses {opt}, which {words[1]} --help lacks"
    elif first == "make":
        makefile = (REPO / "Makefile").read_text()
        for target in (w for w in words[1:] if "=" not in w and not w.startswith("-")):
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{doc}: no make {target}"
    elif first in SHELL_WORDS or "=" in first:
        assert doc in guides, f"{doc}: shell step `{cmd}` outside the guides that tests follow"
    else:  # pragma: no cover - _commands only yields the programs above
        pytest.fail(f"{doc}: no rule for `{cmd}`")


def test_the_docs_show_commands() -> None:
    docs = {doc for doc, _ in ALL}
    assert {"README.md", "docs/operations.md", "docs/agent.md", "docs/benchmarks.md"} <= docs
    assert len(ALL) >= 50


@pytest.mark.parametrize(("doc", "cmd"), ALL, ids=[f"{d}:{i}" for i, (d, _) in enumerate(ALL)])
def test_documented_command(doc: str, cmd: str) -> None:
    check(doc, cmd)


def test_a_wrong_option_in_the_docs_is_caught() -> None:
    with pytest.raises(AssertionError, match="--no-such-option"):
        check("README.md", "fedqi-agent preview --period 2026-10 --no-such-option")
    with pytest.raises(AssertionError, match="does not exist"):
        check("README.md", ".venv/bin/python bench/no_such_bench.py --runs 3")
