"""A practice's install: ``pip install fedqi`` without extras runs the agent, and brings none of
the aggregator's server stack.

A fresh venv (no system site-packages) gets the package built from this source tree, with its
dependencies chosen by pip's resolver from the machine's index (the pip cache makes a second run
quick). The agent then writes a small synthetic practice, checks it and previews a period's
submission; the aggregator's and the demo's console scripts refuse with the extra to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Installed only by the aggregator extra: none of them may be importable in the agent's venv.
AGGREGATOR_ONLY_MODULES = (
    "fastapi",
    "uvicorn",
    "httptools",
    "uvloop",
    "alembic",
    "jinja2",
    "orjson",
    "starlette",
)
# What the agent's own work needs (a practice database in DuckDB, SQLAlchemy, signatures, and
# highspy's linear and SciPy's integer programs with NumPy for the disclosure guard).
AGENT_MODULES = (
    "sqlalchemy",
    "duckdb",
    "duckdb_engine",
    "cryptography",
    "httpx",
    "typer",
    "scipy",
    "numpy",
    "highspy",
)


def _copy_source(dest: Path) -> Path:
    """The files a wheel is built from, copied so the build never writes into the work tree."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    packages = sorted({pattern.rstrip("*") for pattern in includes})
    for package in packages:
        shutil.copytree(
            REPO / package,
            src / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.db", "*.duckdb"),
        )
    return src


def _run(
    args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("agent-only")
    src = _copy_source(root)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FEDQI_", "VIRTUAL_ENV", "PYTHON"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = os.environ.get("HOME", str(root))  # the pip cache lives there
    r = _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(src)],
        env=env,
        cwd=root,
        timeout=900,
    )
    assert r.returncode == 0, f"pip install fedqi failed:\n{r.stdout}\n{r.stderr}"
    return venv, env


def test_agent_only_install_lacks_the_aggregator_stack(
    agent_venv: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = agent_venv
    probe = (
        "import importlib.util, json, sys\n"
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))\n"
    )
    r = _run(
        [str(venv / "bin" / "python"), "-c", probe, *AGGREGATOR_ONLY_MODULES, *AGENT_MODULES],
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    import json

    found = json.loads(r.stdout)
    assert [m for m in AGGREGATOR_ONLY_MODULES if found[m]] == []
    assert [m for m in AGENT_MODULES if not found[m]] == []
    # Not the work tree's packages by accident: the venv's own copy is what runs.
    r = _run(
        [str(venv / "bin" / "python"), "-c", "import agent; print(agent.__file__)"],
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0 and str(venv) in r.stdout, r.stdout + r.stderr
    # the disclosure guard runs before every submission: its solver must import here
    r = _run(
        [str(venv / "bin" / "python"), "-c", "import agent.outbound.guard"],
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr


def test_agent_runs_on_a_practice_database(
    agent_venv: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = agent_venv
    agent = str(venv / "bin" / "fedqi-agent")
    r = _run([agent, "--help"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "preview" in r.stdout and "submit" in r.stdout

    db = tmp_path / "practice.duckdb"
    r = _run(
        [agent, "synth", "--patients", "300", "--seed", "7", "--out", str(db), "--json"],
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert db.stat().st_size > 0

    home = tmp_path / "home"
    r = _run(
        [
            agent, "init", "--home", str(home), "--practice", "A81001", "--aud", "fedqi-test",
            "--aggregator-url", "https://aggregator.invalid", "--source-url", str(db),
        ],
        env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr

    r = _run([agent, "check-source", "--home", str(home), "--json"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '"patients"' in r.stdout

    r = _run(
        [agent, "preview", "--home", str(home), "--period", "2026-03", "--json"],
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    import json

    payload = json.loads(r.stdout)
    assert payload["practice"] == "A81001" and payload["cells"], sorted(payload)


@pytest.mark.parametrize(
    ("script", "extra"), [("fedqi-aggregator", "aggregator"), ("fedqi-demo", "demo")]
)
def test_extras_commands_name_the_extra_to_install(
    agent_venv: tuple[Path, dict[str, str]], tmp_path: Path, script: str, extra: str
) -> None:
    venv, env = agent_venv
    r = _run([str(venv / "bin" / script), "--help"], env=env, cwd=tmp_path)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert f"pip install 'fedqi[{extra}]'" in r.stderr
    assert "Traceback" not in r.stderr
    assert "fastapi" in r.stderr  # names what is missing


def _requirement_name(req: str) -> str:
    import re

    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?", req.strip())
    assert match, req
    return match.group(0).lower()


def test_readme_names_each_dependency_with_its_install() -> None:
    """The README's dependency table says which install brings each package, as pyproject does."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"base": project["dependencies"], **project["optional-dependencies"]}
    declared = {
        (_requirement_name(req), group)
        for group, reqs in groups.items()
        for req in reqs
        if not req.startswith("fedqi[")
    }
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Dependencies and why", 1)[1]
    listed = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1] in groups:
            listed.update((name.strip().lower(), cells[1]) for name in cells[0].split(","))
    assert declared == listed
    # the extras nest: the demo needs the aggregator's, dev needs everything
    assert "fedqi[aggregator]" in groups["demo"]
    assert any(r.startswith("fedqi[") and "aggregator" in r and "demo" in r for r in groups["dev"])
