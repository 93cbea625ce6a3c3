"""Every setting and every CLI command is documented; settings come from env, TOML and secret
files; the CLI fails cleanly on bad input. (No database server needed except where noted.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main

from aggregator.cli import app
from aggregator.cli import main as cli
from aggregator.errors import BadRequestError, ConfigError
from aggregator.settings import Settings, get_settings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "aggregator.md").read_text()


def _commands(group: typer.Typer, prefix: str = "") -> list[str]:
    click_group = typer.main.get_command(group)
    names = []
    for name, cmd in click_group.commands.items():  # type: ignore[attr-defined]
        full = f"{prefix}{name}"
        if hasattr(cmd, "commands"):
            names += [f"{full} {sub}" for sub in cmd.commands]
        else:
            names.append(full)
    return names


def test_every_cli_command_is_documented():
    commands = _commands(app)
    assert "practice add" in commands and "db upgrade" in commands
    missing = [c for c in commands if f"`{c}" not in DOC]
    assert missing == []


def test_every_setting_is_documented():
    missing = [
        name for name in Settings.model_fields if name != "config_file" and f"`{name}`" not in DOC
    ]
    assert missing == []


def test_settings_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    toml = tmp_path / "agg.toml"
    toml.write_text('db = "sqlite:///from-toml.db"\nport = 9000\n')
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "FEDQI_AGGREGATOR_PSEUDONYM_SECRET").write_text("s3cret")
    monkeypatch.setenv("FEDQI_AGGREGATOR_PORT", "9100")
    s = get_settings(toml, secrets_dir=secrets)
    assert s.db == "sqlite:///from-toml.db"  # TOML
    assert s.port == 9100  # the environment beats the file
    assert s.pseudonym_secret is not None and s.pseudonym_secret.get_secret_value() == "s3cret"
    assert get_settings(toml, port=9200).port == 9200  # options beat everything


def test_settings_reject_unknown_keys_and_bad_values(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('dbb = "sqlite:///typo.db"\n')
    with pytest.raises(ConfigError, match="dbb"):
        get_settings(bad)
    with pytest.raises(BadRequestError, match="port"):  # an option's value: exit 2
        get_settings(port=70000)
    with pytest.raises(BadRequestError, match="--config .*absent.toml: no such settings file"):
        get_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="FEDQI_AGGREGATOR_CONFIG"):
        get_settings(environ={"FEDQI_AGGREGATOR_CONFIG": str(tmp_path / "absent.toml")})


def test_a_bad_option_exits_2_and_a_bad_setting_elsewhere_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exit-code table: a bad argument (an option's value, a --config file that is not
    there) is 2; the same value from the environment is configuration, 1."""
    assert cli(["serve", "--port", "0"]) == 2
    assert "port: Input should be greater than or equal to 1 (--port)" in capsys.readouterr().err
    assert cli(["practice", "list", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "no such settings file" in capsys.readouterr().err
    monkeypatch.setenv("FEDQI_AGGREGATOR_PORT", "0")
    assert cli(["serve"]) == 1
    assert "(environment variable FEDQI_AGGREGATOR_PORT)" in capsys.readouterr().err


def test_a_database_url_of_another_kind_names_where_it_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL naming another database (MySQL, say) is refused before anything is opened, naming
    its source: from --db a bad argument (exit 2), from the environment or the file 1."""
    assert cli(["db", "upgrade", "--db", "mysql://u@host/fedqi"]) == 2
    err = capsys.readouterr().err
    assert "db: mysql:// is not a supported database" in err and "(--db)" in err
    assert "Value error" not in err  # the validator's words
    assert err.count("\n") == 1, err
    toml = tmp_path / "agg.toml"
    toml.write_text('db = "mysql+pymysql://u@host/fedqi"\n')
    assert cli(["practice", "list", "--config", str(toml)]) == 1
    err = capsys.readouterr().err
    assert "mysql+pymysql:// is not a supported database" in err and f"(in {toml})" in err
    toml.write_text('port = "abc"\n')
    assert cli(["practice", "list", "--config", str(toml)]) == 1
    assert f"port: not a whole number (in {toml})" in capsys.readouterr().err
    monkeypatch.setenv("FEDQI_AGGREGATOR_DB", "oracle://x")
    assert cli(["practice", "list"]) == 1
    assert "(environment variable FEDQI_AGGREGATOR_DB)" in capsys.readouterr().err
    monkeypatch.delenv("FEDQI_AGGREGATOR_DB")
    for fine in ("fedqi.db", "sqlite:///x.db", "postgresql+psycopg://u@h/d", "postgres://u@h/d"):
        assert get_settings(db=fine).db == fine


def test_a_database_that_does_not_answer_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """PostgreSQL refusing the connection: the driver's words on one line (psycopg's run over
    two, with a tab-indented hint; a new-user run)."""
    url = "postgresql://postgres@127.0.0.1:1/fedqi"
    for args in (["practice", "list"], ["db", "upgrade"]):
        assert cli([*args, "--db", url]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: cannot reach database postgresql") and "refused" in err
        assert err.count("\n") == 1 and "\t" not in err, err


def test_serve_refuses_an_unmigrated_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "empty.db").touch()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert cli(["serve", "--db", url, "--key-dir", str(tmp_path / "k")]) == 1
    err = capsys.readouterr().err
    assert "not migrated" in err and "db upgrade" in err and err.count("\n") == 1


def test_a_command_on_a_missing_sqlite_file_names_it_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    absent = tmp_path / "absent.db"
    for args in (["practice", "list"], ["serve", "--key-dir", str(tmp_path / "k")]):
        assert cli([*args, "--db", str(absent)]) == 1
        err = capsys.readouterr().err
        assert f"there is no file {absent}" in err and "db upgrade" in err, err
        assert not absent.exists()
    assert cli(["db", "upgrade", "--db", str(absent)]) == 0  # the one command that makes it
    assert absent.exists()


def test_serve_refuses_an_uninitialised_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    url = f"sqlite:///{tmp_path / 'agg.db'}"
    assert cli(["db", "upgrade", "--db", url]) == 0
    assert cli(["serve", "--db", url, "--key-dir", str(tmp_path / "k")]) == 1
    assert "not initialised" in capsys.readouterr().err


def test_cli_bad_input_is_one_line_and_non_zero(network, capsys: pytest.CaptureFixture[str]):
    capsys.readouterr()
    cases = [
        (
            [
                "practice",
                "add",
                "Z1",
                "--name",
                "x",
                "--group",
                "g",
                "--list-size",
                "1",
                "--imd-decile",
                "3",
            ],
            "ODS code",
        ),
        (
            [
                "practice",
                "add",
                "A81001",
                "--name",
                "x",
                "--group",
                "g",
                "--list-size",
                "1",
                "--imd-decile",
                "11",
            ],
            "imd-decile",
        ),
        (["user", "add", "eve", "--role", "superuser"], "--role"),
        (["user", "add", "eve", "--role", "practice"], "--practice"),
        (["enrol-token", "B99999"], "not registered"),
        (["key", "revoke", "x" * 43, "--key-dir", str(network.settings.key_dir)], "no key"),
        (["key", "list", "--practice", "Z99999"], "no such practice is registered"),
        (
            [
                "init",
                "--name",
                "again",
                "--aud",
                "fedqi-test",
                "--key-dir",
                str(network.tmp / "k2"),
            ],
            "already initialised",
        ),
    ]
    for args, words in cases:
        assert network.cli(*args) != 0, args
        err = capsys.readouterr().err
        assert words in err and err.startswith("error: ") and err.count("\n") == 1, (args, err)


def test_init_writes_private_keys_readable_only_by_the_owner(network):
    key_dir = network.settings.key_dir
    assert oct(key_dir.stat().st_mode & 0o777) == "0o700"
    for f in key_dir.iterdir():
        assert oct(f.stat().st_mode & 0o777) == "0o600", f


def test_cli_reports_json(network, capsys: pytest.CaptureFixture[str]):
    import json

    network.add_practice("A81001")
    capsys.readouterr()
    assert network.cli("enrol-token", "A81001", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["practice"] == "A81001" and len(report["token"]) == 22
    assert (
        network.cli("user", "add", "ann", "--role", "network_lead", "--group", "PCN1", "--json")
        == 0
    )
    assert json.loads(capsys.readouterr().out)["token"].startswith("fqa_")


def test_a_user_id_no_database_can_hold_is_a_bad_argument(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """user revoke 99999999999999999999: exit 2, one line, where it was an OverflowError
    traceback from SQLite (a new-user run)."""
    capsys.readouterr()
    assert cli(["user", "revoke", "99999999999999999999"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Invalid value for 'USER_ID'") and err.count("\n") == 1, err
