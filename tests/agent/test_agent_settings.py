"""Agent settings: TOML file, environment, precedence, and loud failures naming key and place."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.home.settings import get_settings, known_env_names, setting_keys


def _write(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "agent.toml"
    path.write_text(text)
    return path


def test_reads_toml_and_nested_sections(tmp_path: Path) -> None:
    _write(
        tmp_path,
        'practice = "B81001"\naud = "net-a"\n[source]\nurl = "p.db"\n[transport]\nretries = 2\n',
    )
    s = get_settings(tmp_path, {})
    assert (s.practice, s.aud, s.source.url, s.transport.retries) == ("B81001", "net-a", "p.db", 2)
    assert s.release == "auto"


def test_environment_overrides_file(tmp_path: Path) -> None:
    _write(tmp_path, 'release = "auto"\n[transport]\nretries = 2\n')
    s = get_settings(
        tmp_path, {"FEDQI_AGENT_RELEASE": "hold", "FEDQI_AGENT_TRANSPORT__RETRIES": "7"}
    )
    assert s.release == "hold" and s.transport.retries == 7


def test_home_from_environment(tmp_path: Path) -> None:
    _write(tmp_path, 'practice = "B81001"\n')
    assert get_settings(None, {"FEDQI_AGENT_HOME": str(tmp_path)}).practice == "B81001"


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, 'practise = "B81001"\n')
    with pytest.raises(ConfigError) as exc:
        get_settings(tmp_path, {})
    assert "'practise'" in str(exc.value) and str(path) in str(exc.value)


def test_unknown_nested_key_names_dotted_key(tmp_path: Path) -> None:
    _write(tmp_path, '[source]\nurll = "x.db"\n')
    with pytest.raises(ConfigError, match=r"'source\.urll'"):
        get_settings(tmp_path, {})


def test_a_top_level_setting_below_a_table_says_where_it_belongs(tmp_path: Path) -> None:
    # As `echo 'guard = "maybe"' >> agent.toml` does to a generated file ending with [source].
    path = _write(tmp_path, 'practice = "B81001"\n[source]\nurl = "p.db"\nguard = "off"\n')
    with pytest.raises(ConfigError) as exc:
        get_settings(tmp_path, {})
    assert (
        f"unknown setting 'source.guard' in {path}: `guard` is a top-level setting: put it above "
        "the first [table] line"
    ) in str(exc.value)
    _write(tmp_path, '[source]\nurll = "x.db"\n')  # a plain typo: no such hint
    with pytest.raises(ConfigError) as exc:
        get_settings(tmp_path, {})
    assert "top-level" not in str(exc.value)


def test_every_bad_setting_is_named_with_where_it_came_from(tmp_path: Path) -> None:
    """Two bad values in the file and one in the environment: each named, with its place, in
    one line, so the practice corrects them in one go (not one per run)."""
    path = _write(tmp_path, "practice = 5\naggregator_url = 7\n[transport]\nretries = 2\n")
    with pytest.raises(ConfigError) as exc:
        get_settings(tmp_path, {"FEDQI_AGENT_TRANSPORT__RETRIES": "many"})
    said = str(exc.value)
    assert "\n" not in said
    for part in (
        f"bad setting 'practice' in {path}: not text (in the TOML file, in quotes)",
        f"bad setting 'aggregator_url' in {path}: not text (in the TOML file, in quotes)",
        "bad setting 'transport.retries' in environment variable FEDQI_AGENT_TRANSPORT__RETRIES: "
        "not a whole number",
    ):
        assert part in said, said
    assert "more)" not in said


def test_unknown_environment_variable_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FEDQI_AGENT_RELEAS"):
        get_settings(tmp_path, {"FEDQI_AGENT_RELEAS": "hold"})


def test_bad_value_names_the_environment_variable(tmp_path: Path) -> None:
    _write(tmp_path, 'release = "auto"\n')
    with pytest.raises(ConfigError, match="FEDQI_AGENT_RELEASE"):
        get_settings(tmp_path, {"FEDQI_AGENT_RELEASE": "sometimes"})


def test_bad_value_in_file_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, 'practice = "not-ods"\n')
    with pytest.raises(ConfigError) as exc:
        get_settings(tmp_path, {})
    assert "'practice'" in str(exc.value) and str(path) in str(exc.value)


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path, 'practice = "A12345"\nrelease = \n')
    with pytest.raises(ConfigError, match=r"agent\.toml: not valid TOML.*line 2"):
        get_settings(tmp_path, {})


@pytest.mark.parametrize(
    "url", ["http://example.org", "http://10.0.0.5:8400", "ftp://127.0.0.1", "127.0.0.1:8400"]
)
def test_plain_http_only_for_loopback(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="aggregator_url"):
        get_settings(tmp_path, {"FEDQI_AGENT_AGGREGATOR_URL": url})


@pytest.mark.parametrize(
    "url",
    ["https://agg.example.nhs.uk", "http://127.0.0.1:8400", "http://[::1]:80", "http://localhost"],
)
def test_https_and_loopback_http_accepted(tmp_path: Path, url: str) -> None:
    assert get_settings(tmp_path, {"FEDQI_AGENT_AGGREGATOR_URL": url}).aggregator_url


def test_first_period_format_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="YYYY-MM"):
        get_settings(tmp_path, {"FEDQI_AGENT_FIRST_PERIOD": "2026-13"})


def test_disclosure_policy_from_toml(tmp_path: Path) -> None:
    _write(
        tmp_path,
        '[disclosure]\nname = "stricter"\n[disclosure.stratified]\n'
        "suppress_at_or_below = 10\nround_to = 10\n",
    )
    s = get_settings(tmp_path, {})
    assert s.disclosure is not None and s.disclosure.stratified.round_to == 10


def test_require_names_the_missing_setting(tmp_path: Path) -> None:
    s = get_settings(tmp_path, {})
    with pytest.raises(ConfigError, match="'source.url'.*FEDQI_AGENT_SOURCE__URL"):
        s.require("source.url")


def test_env_names_cover_every_setting() -> None:
    names = known_env_names()
    for key in setting_keys():
        assert "FEDQI_AGENT_" + key.upper().replace(".", "__") in names


def test_settings_are_not_built_at_import() -> None:
    import agent.home.settings as module

    assert not any(isinstance(v, module.AgentSettings) for v in vars(module).values())


# --- one way to read settings: the environment handed in, never a swapped os.environ ----------


def test_each_call_reads_the_environment_it_is_handed_concurrently(tmp_path: Path) -> None:
    """Settings built at the same time in several threads, each from its own environment, get
    their own values (a process-wide os.environ swap could not give this)."""
    from concurrent.futures import ThreadPoolExecutor

    practices = [f"A8{i:04d}" for i in range(40)]

    def build(ods: str) -> str:
        s = get_settings(tmp_path / ods, {"FEDQI_AGENT_PRACTICE": ods})
        return str(s.practice)

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(build, practices)) == practices


def test_cli_uses_the_environment_it_is_handed_and_leaves_os_environ_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from agent.cli import main

    monkeypatch.setenv("FEDQI_AGENT_HOME", str(tmp_path / "from-os-environ"))
    before = dict(os.environ)
    handed = tmp_path / "handed"
    code = main(["init", "--practice", "A81001", "--aud", "net"], {"FEDQI_AGENT_HOME": str(handed)})
    assert code == 0
    assert (handed / "agent.toml").exists() and not (tmp_path / "from-os-environ").exists()
    assert dict(os.environ) == before


def test_no_module_swaps_os_environ() -> None:
    """Commands read the environment they are handed, never os.environ, and no module changes
    it. The one exception is the console script's start-up, which is a process's, not a
    command's: it holds NumPy's OpenBLAS to one thread unless the environment says otherwise
    (agent/entry.py), before any command runs; nothing else there may change os.environ."""
    import re

    repo = Path(__file__).resolve().parents[2]
    swap = re.compile(r"os\.environ\.(clear|update|pop|setdefault)\(|os\.environ\[[^\]]+\]\s*=")
    allowed = {"agent/entry.py": 'os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")'}
    offenders = []
    for package in ("agent", "demo"):
        for p in (repo / package).rglob("*.py"):
            name = p.relative_to(repo).as_posix()
            text = p.read_text()
            if name in allowed:
                assert text.count(allowed[name]) == 1, name
                text = text.replace(allowed[name], "")
            if swap.search(text):
                offenders.append(name)
    assert offenders == []
