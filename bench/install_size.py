"""Install size and time: the practice's install (``pip install fedqi``, the agent) against the
network's (``pip install 'fedqi[aggregator,demo]'``).

Each variant gets a fresh venv (no system site-packages) and the package built from this source
tree (copied first, so the build writes nothing here); pip resolves and installs the
dependencies from the machine's configured index. Reported: wall time of the ``pip install``,
the size of the venv's site-packages (``du``, pip itself included, the same in both) and how many
distributions it holds. ``--cold`` passes ``--no-cache-dir`` (every wheel downloaded again);
the default reuses pip's cache, as a second install on the same machine does.

    .venv/bin/python bench/install_size.py [--cold] [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {"agent": "", "full": "[aggregator,demo]"}


def copy_source(dest: Path) -> Path:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in sorted({p.rstrip("*") for p in includes}):
        shutil.copytree(
            REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return src


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def measure(src: Path, root: Path, extras: str, cold: bool) -> tuple[float, int, int]:
    venv = root / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    before = {p.name for p in site.iterdir() if p.name.endswith(".dist-info")}
    cmd = [py, "-m", "pip", "install", "--quiet", f"{src}{extras}"]
    if cold:
        cmd.insert(4, "--no-cache-dir")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    after = {p.name for p in site.iterdir() if p.name.endswith(".dist-info")}
    return seconds, du_bytes(site), len(after - before)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="pip --no-cache-dir")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = copy_source(root)
        print(
            f"{'install':<8} {'pip install s':>14} {'site-packages MB':>17} {'distributions':>14}"
        )
        for name, extras in VARIANTS.items():
            for _ in range(args.runs):
                seconds, size, count = measure(src, root, extras, args.cold)
                print(f"{name:<8} {seconds:>14.1f} {size / 1e6:>17.1f} {count:>14}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
