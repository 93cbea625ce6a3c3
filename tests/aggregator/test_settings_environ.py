"""One way to read the aggregator's settings: from the environment get_settings is handed,
never by changing os.environ within the process."""

from __future__ import annotations

import ast
import os
import threading
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.errors import BadRequestError, ConfigError
from aggregator.settings import get_settings

REPO = Path(__file__).resolve().parents[2]


def test_settings_come_from_the_environment_handed_in(tmp_path: Path) -> None:
    toml = tmp_path / "aggregator.toml"
    toml.write_text('port = 8501\nlog_level = "debug"\n')
    env = {"FEDQI_AGGREGATOR_CONFIG": str(toml), "FEDQI_AGGREGATOR_PORT": "8600"}
    s = get_settings(environ=env)
    assert s.port == 8600  # the environment wins over the file
    assert s.log_level == "debug"  # the file's value where the environment is silent
    assert s.config_file == toml
    assert get_settings(environ={}).port == 8400  # an empty environment: the defaults
    assert get_settings(environ=env, port=8700).port == 8700  # explicit values win over both


def test_a_bad_value_in_the_environment_is_named() -> None:
    with pytest.raises(ConfigError, match="port"):
        get_settings(environ={"FEDQI_AGGREGATOR_PORT": "not-a-port"})


def test_a_bad_value_names_where_it_came_from(tmp_path: Path) -> None:
    toml = tmp_path / "aggregator.toml"
    toml.write_text('port = "x"\n')
    with pytest.raises(ConfigError, match=r"port: .* \(in .*aggregator.toml\)"):
        get_settings(toml, environ={})
    with pytest.raises(
        ConfigError, match=r"port: .* \(environment variable FEDQI_AGGREGATOR_PORT\)"
    ):
        get_settings(environ={"FEDQI_AGGREGATOR_PORT": "x"})
    # a bad value given as an option is a bad argument (exit 2); from the file or the
    # environment, configuration (exit 1)
    with pytest.raises(BadRequestError, match=r"port: .* \(--port\)"):
        get_settings(toml, environ={}, port=99999)


def test_an_unknown_variable_in_the_environment_is_an_error() -> None:
    """As an unknown key in the TOML file is: a misspelt name must not fall back to a default."""
    with pytest.raises(
        ConfigError, match="unknown setting FEDQI_AGGREGATOR_PROT in the environment"
    ):
        get_settings(environ={"FEDQI_AGGREGATOR_PROT": "9000"})
    # the variables that say where settings come from are not settings, and are accepted
    assert get_settings(environ={"FEDQI_AGGREGATOR_SECRETS_DIR": ""}).port == 8400


def test_threads_read_their_own_environment_at_once(tmp_path: Path) -> None:
    ports: dict[int, int] = {}
    barrier = threading.Barrier(8)

    def read(i: int) -> None:
        barrier.wait()
        for _ in range(20):
            got = get_settings(environ={"FEDQI_AGGREGATOR_PORT": str(9000 + i)}).port
            if got != 9000 + i:
                ports[i] = got
                return
        ports[i] = 9000 + i

    threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ports == {i: 9000 + i for i in range(8)}


def test_the_command_line_passes_its_environment_down_without_touching_os_environ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = dict(os.environ)
    db = tmp_path / "from-environ.db"
    code = main(["db", "upgrade"], environ={"FEDQI_AGGREGATOR_DB": f"sqlite:///{db}"})
    assert code == 0, capsys.readouterr()
    assert db.is_file()  # the database named by the handed environment was made
    assert dict(os.environ) == before


def test_no_module_assigns_to_os_environ_except_serve_handing_settings_to_workers() -> None:
    """Writing os.environ is allowed only where `serve --workers N` hands the settings to its
    worker processes."""
    writers = []
    for path in (REPO / "aggregator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "os"
                and node.value.attr == "environ"
                and node.attr in {"update", "clear", "pop", "setdefault"}
            ) or (
                isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Store)
                and ast.unparse(node.value) == "os.environ"
            ):
                writers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert writers and all(w.startswith("aggregator/cli.py:") for w in writers), writers
    assert len(writers) == 2, writers  # serve's two lines: the db and key dir, and the config file


def test_exit_codes_come_from_one_table_shown_in_help_and_docs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aggregator.errors import EXIT_CODE_MEANINGS, ExitCode

    assert main(["--help"]) == ExitCode.OK
    shown = " ".join(capsys.readouterr().out.split())
    docs = (REPO / "docs" / "aggregator.md").read_text()
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"{int(code)} {' '.join(meaning.split())}" in shown
        assert f"| {int(code)} | {meaning} |" in docs
    # no literal exit number in the command line's code: each comes from the table
    tree = ast.parse((REPO / "aggregator" / "cli.py").read_text())
    literal_exits = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) in {"typer.Exit", "SystemExit", "sys.exit"}
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ]
    assert literal_exits == []
