"""The peer groups' list-size bands come from the aggregator's settings (``size_band_edges``,
``min_peers_per_band``), reach the views through the runtime, and a bad value is refused with
an error naming the setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from aggregator.benchmarks.peers import peer_group_options, resolve_group
from aggregator.benchmarks.viewer import Viewer
from aggregator.db.models import User
from aggregator.errors import ConfigError
from aggregator.runtime import Runtime
from aggregator.settings import get_settings

SIZES = {"A81001": 3000, "A81002": 6000, "A81003": 9000, "A81004": 16000}


def test_the_defaults_are_the_networks_bands() -> None:
    s = get_settings(environ={})
    assert s.size_band_edges == (5000, 10000, 15000) and s.min_peers_per_band == 3


def test_bands_from_the_environment_and_toml(tmp_path: Path) -> None:
    env = {
        "FEDQI_AGGREGATOR_SIZE_BAND_EDGES": "4000, 8000",
        "FEDQI_AGGREGATOR_MIN_PEERS_PER_BAND": "5",
    }
    s = get_settings(environ=env)
    assert s.size_band_edges == (4000, 8000) and s.min_peers_per_band == 5
    assert get_settings(environ={"FEDQI_AGGREGATOR_SIZE_BAND_EDGES": "[7000]"}).size_band_edges == (
        7000,
    )
    toml = tmp_path / "agg.toml"
    toml.write_text("size_band_edges = [6000, 12000]\nmin_peers_per_band = 2\n")
    s = get_settings(toml, environ={})
    assert s.size_band_edges == (6000, 12000) and s.min_peers_per_band == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"size_band_edges": [10000, 5000]}, r"size_band_edges: .*ascending.*5000 follows 10000"),
        ({"size_band_edges": [5000, 5000]}, r"size_band_edges: .*no repeats"),
        ({"size_band_edges": [0, 5000]}, r"size_band_edges: .*at least 1"),
        ({"size_band_edges": "5000;10000"}, r"size_band_edges: .*comma-separated"),
        ({"min_peers_per_band": 0}, r"min_peers_per_band: .*greater than or equal to 1"),
    ],
)
def test_bad_bands_are_refused_naming_the_setting(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_settings(environ={}, **values)


def test_a_bad_band_in_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="size_band_edges"):
        get_settings(environ={"FEDQI_AGGREGATOR_SIZE_BAND_EDGES": "9000,3000"})


def _size_groups(network: Any, **bands: object) -> dict[str, frozenset[str]]:
    """The size peer groups an admin is offered under settings ``bands``, with their members."""
    settings = get_settings(db=network.db, key_dir=network.settings.key_dir, environ={}, **bands)
    runtime = Runtime.load(settings, db=network.database)
    with runtime.db.read() as session:
        admin = session.scalars(select(User).where(User.role == "admin")).one()
        viewer = Viewer.load(session, admin, runtime.pseudonym_secret, runtime.peer_bands)
        labels = [o["group"] for o in peer_group_options(viewer) if o["peer"] == "size"]
        return {g: resolve_group(viewer, "size", g).members or frozenset() for g in labels}


def test_other_bands_in_the_settings_change_the_size_groups(network: Any) -> None:
    for ods, size in SIZES.items():
        assert network.cli("practice", "add", ods, "--name", f"Practice {ods}", "--group", "PCN1",
                           "--list-size", str(size), "--imd-decile", "5") == 0  # fmt: skip
    network.user("admin")
    members = _size_groups(network)
    assert members == {
        "under 5,000": {"A81001"},
        "5,000-9,999": {"A81002", "A81003"},
        "15,000 and over": {"A81004"},
    }
    members = _size_groups(network, size_band_edges=[7000, 20000])
    assert members == {
        "under 7,000": {"A81001", "A81002"},
        "7,000-19,999": {"A81003", "A81004"},
    }
