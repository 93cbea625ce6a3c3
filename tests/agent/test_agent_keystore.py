"""The agent home's keys: private modes, never overwritten, rotation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.home.keystore import Keystore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_writes_private_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = Keystore(home).create()
    assert _mode(home) == 0o700 and _mode(home / "keys") == 0o700
    key_file = home / "keys" / f"{key.kid}.key"
    assert _mode(key_file) == 0o600
    assert Keystore(home).active().kid == key.kid


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    first = store.create()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        store.create()
    assert store.active().kid == first.kid


def test_load_refuses_a_key_others_can_read(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    key = store.create()
    (tmp_path / "keys" / f"{key.kid}.key").chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        store.active()


def test_missing_key_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fedqi-agent init"):
        Keystore(tmp_path).active()


def test_rotation_keeps_the_old_key_and_reuses_a_pending_one(tmp_path: Path) -> None:
    store = Keystore(tmp_path)
    old = store.create()
    new = store.start_rotation()
    assert store.start_rotation().kid == new.kid  # an interrupted rotation resumes
    assert store.active().kid == old.kid
    assert store.finish_rotation().kid == new.kid
    assert store.active().kid == new.kid
    assert set(store.kids()) == {old.kid, new.kid}
    assert store.pending() is None


def test_unreadable_trust_anchors_are_one_line(tmp_path: Path) -> None:
    from agent.home.keystore import load_trust

    (tmp_path / "trust.json").write_text('{"x": 1}')
    with pytest.raises(ConfigError) as caught:
        load_trust(tmp_path)
    message = str(caught.value)
    assert message.endswith("unreadable trust anchors: aud: Field required (+5 more)"), message
    assert "\n" not in message and "pydantic.dev" not in message
