"""What the agent prints is printed as it is: a path or a name holding Rich's emoji codes
(``:ok:``, ``:smile:``) is not turned into emoji (a new-user run saw 'csv🆗')."""

from __future__ import annotations

import pytest

from agent.commands._common import console


def test_emoji_codes_in_names_are_printed_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    console().print("loaded from csv:ok: a:smile:b")
    assert capsys.readouterr().out.strip() == "loaded from csv:ok: a:smile:b"
