"""Browser tests drive Debian's Chromium (not a downloaded browser) through Playwright."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The synthetic network (real CLI, real server, signed submissions) lives with the benchmark tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

CHROMIUM = os.environ.get("FEDQI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def browser():  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install Debian's with `apt-get install -y chromium` "
            "(or point FEDQI_CHROMIUM at a Chromium binary)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Playwright client is not installed: `.venv/bin/pip install playwright`")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
