"""deploy/ is checked as far as this machine allows: files parse, the commands they run exist,
and the compose file, proxy, image and service units agree with the settings."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
AGG = DEPLOY / "aggregator"
AGENT = DEPLOY / "agent"


def _console_scripts() -> set[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(data["project"]["scripts"])


def _compose() -> dict:
    return yaml.safe_load((AGG / "compose.yaml").read_text())


def _cli_words(module: str) -> set[str]:
    """Every command and subcommand name a typer app knows."""
    import importlib

    from typer.main import get_command

    mod = importlib.import_module(module)
    if hasattr(mod, "_load_commands"):
        mod._load_commands()
    words: set[str] = set()

    def walk(cmd, prefix: str = "") -> None:  # type: ignore[no-untyped-def]
        for name, sub in getattr(cmd, "commands", {}).items():
            words.add((prefix + " " + name).strip())
            walk(sub, prefix + " " + name)

    walk(get_command(mod.app))
    return words


def test_compose_has_database_app_proxy_and_backups() -> None:
    services = _compose()["services"]
    assert {"db", "aggregator", "proxy", "backup"} <= set(services)
    assert services["db"]["image"].startswith("postgres:")
    assert services["proxy"]["ports"] == ["443:443"]
    # the database is not published to the host, only reachable on the internal network
    assert "ports" not in services["db"] and "ports" not in services["aggregator"]
    assert _compose()["networks"]["backend"]["internal"] is True


def test_env_example_lists_the_files_compose_reads() -> None:
    compose = _compose()
    listed = (AGG / "env.example").read_text()
    header = (AGG / "compose.yaml").read_text().split("\nname:")[0]
    assert ".env" not in header.replace("reads no .env file", "")  # compose reads none
    files = [s["file"].removeprefix("./") for s in compose["secrets"].values()]
    mounts = [v.split(":")[0] for v in compose["services"]["proxy"]["volumes"]]
    assert "./tls" in mounts
    for name in [*files, "tls/fullchain.pem", "tls/privkey.pem"]:
        assert name in listed, name
    conf = (AGG / "nginx.conf").read_text()
    assert "/etc/nginx/tls/fullchain.pem" in conf and "/etc/nginx/tls/privkey.pem" in conf


def test_compose_port_agrees_with_settings_image_and_proxy() -> None:
    from aggregator.settings import Settings

    services = _compose()["services"]
    env = services["aggregator"]["environment"]
    port = int(env["FEDQI_AGGREGATOR_PORT"])
    assert port == Settings.model_fields["port"].default
    assert services["aggregator"]["expose"] == [str(port)]
    dockerfile = (AGG / "Dockerfile").read_text()
    assert f"EXPOSE {port}" in dockerfile
    assert f"FEDQI_AGGREGATOR_PORT={port}" in dockerfile
    assert f"server aggregator:{port};" in (AGG / "nginx.conf").read_text()
    # every FEDQI_AGGREGATOR_ variable the deployment sets is a real setting
    fields = set(Settings.model_fields) | {"secrets_dir", "config"}
    for name in env:
        assert name.startswith("FEDQI_AGGREGATOR_")
        assert name.removeprefix("FEDQI_AGGREGATOR_").lower() in fields, name
    # the database URL arrives as a secret file named like the setting's variable
    targets = [s["target"] for s in services["aggregator"]["secrets"]]
    assert "/run/secrets/fedqi_aggregator_db" in targets
    assert "db" in Settings.model_fields


def test_proxy_body_cap_matches_the_aggregator() -> None:
    from aggregator.settings import MAX_BODY_BYTES

    conf = (AGG / "nginx.conf").read_text()
    m = re.search(r"client_max_body_size\s+(\d+)k;", conf)
    assert m and int(m.group(1)) * 1024 == MAX_BODY_BYTES
    assert "limit_req_zone" in conf and "limit_req " in conf


def test_proxy_sends_the_hardening_headers_once() -> None:
    conf = (AGG / "nginx.conf").read_text()
    for header, value in (
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    ):
        assert f'add_header {header} "{value}" always;' in conf
        assert f"proxy_hide_header {header};" in conf  # the aggregator's copy, hidden


def test_health_endpoints_used_by_deploy_exist() -> None:
    from aggregator.web.app import create_app  # noqa: F401  (import proves the module exists)

    paths = set()
    src = (REPO / "aggregator" / "web" / "app.py").read_text()
    for p in ("/healthz", "/readyz"):
        if f'"{p}"' in src:
            paths.add(p)
    assert paths == {"/healthz", "/readyz"}
    assert "/readyz" in (AGG / "Dockerfile").read_text()
    assert "location = /readyz" in (AGG / "nginx.conf").read_text()


def test_entrypoint_runs_commands_that_exist() -> None:
    words = _cli_words("aggregator.cli")
    script = (AGG / "entrypoint.sh").read_text()
    subprocess.run(["sh", "-n", str(AGG / "entrypoint.sh")], check=True)
    subprocess.run(["sh", "-n", str(AGG / "backup.sh")], check=True)
    for line in script.splitlines():
        parts = shlex.split(line) if line.strip() and not line.startswith("#") else []
        if parts and parts[0] in ("exec",):
            parts = parts[1:]
        if parts and parts[0] == "fedqi-aggregator":
            cmd = " ".join(p for p in parts[1:] if not p.startswith(("-", '"', "$")))
            if cmd:  # a bare `exec fedqi-aggregator "$@"` passes on the container's command
                assert cmd in words, cmd
    assert "fedqi-aggregator" in _console_scripts()


def _run_entrypoint(
    tmp_path: Path, *args: str, fail: str = ""
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """deploy/aggregator/entrypoint.sh with a fake fedqi-aggregator first on PATH, which
    records each command line it is given (and exits 1 for the one named by ``fail``)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    fake = bin_dir / "fedqi-aggregator"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        f'if [ -n "{fail}" ] && [ "$*" = "{fail}" ]; then echo "fake failure" >&2; exit 1; fi\n'
    )
    fake.chmod(0o755)
    result = subprocess.run(
        ["sh", str(AGG / "entrypoint.sh"), *args],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def test_entrypoint_serves_by_default_and_runs_set_up_commands(tmp_path: Path) -> None:
    # no arguments, or options only (compose's command: serve's options): migrate, then serve
    assert _run_entrypoint(tmp_path)[1] == ["db upgrade", "serve"]
    command = _compose()["services"]["aggregator"]["command"]
    assert _run_entrypoint(tmp_path, *command)[1] == ["db upgrade", "serve " + " ".join(command)]
    assert _run_entrypoint(tmp_path, "serve", "--port", "9000")[1] == [
        "db upgrade",
        "serve --port 9000",
    ]
    # a failed migration stops it before serve
    result, calls = _run_entrypoint(tmp_path, fail="db upgrade")
    assert result.returncode != 0 and calls == ["db upgrade"]
    # `docker compose run --rm aggregator COMMAND ...`: the set-up commands of
    # docs/operations.md, section 2, run as given (they were `serve init ...` before)
    for argv in (
        ["init", "--name", "North network", "--aud", "north-network"],
        ["db", "upgrade"],
        ["practice", "add", "A81001", "--name", "Riverside Surgery"],
        ["user", "add", "Riverside IG", "--role", "ig_officer", "--json"],
        ["enrol-token", "A81001", "--json"],
        ["log", "verify"],
        ["version"],
    ):
        result, calls = _run_entrypoint(tmp_path, *argv)
        assert result.returncode == 0, result.stderr
        assert calls == [" ".join(argv)], argv
        assert argv[0] in {w.split()[0] for w in _cli_words("aggregator.cli")}
    # the command's exit status is the container's
    result, calls = _run_entrypoint(tmp_path, "log", "verify", fail="log verify")
    assert result.returncode == 1 and calls == ["log verify"]


def test_entrypoint_initialises_a_network_with_the_real_cli(tmp_path: Path) -> None:
    """The administrator's steps through the entry point, with the real fedqi-aggregator: a
    fresh database is refused by serve until `init` has run (the container's restart loop that
    docs/operations.md tells the administrator to avoid), and init works through it."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "FEDQI_AGGREGATOR_DB": f"sqlite:///{tmp_path / 'agg.db'}",
        "FEDQI_AGGREGATOR_KEY_DIR": str(tmp_path / "keys"),
        "FEDQI_AGGREGATOR_PORT": "9",  # never bound: serve stops before it listens
    }

    def entrypoint(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(AGG / "entrypoint.sh"), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    served = entrypoint()
    assert served.returncode != 0
    assert "not initialised" in served.stderr
    init = entrypoint("init", "--name", "North network", "--aud", "north-network")
    assert init.returncode == 0, init.stderr
    assert "log public key" in init.stdout
    assert (tmp_path / "keys" / "log.key").exists()
    added = entrypoint("practice", "add", "A81001", "--name", "Riverside Surgery", "--group",
                       "North PCN", "--list-size", "8200", "--imd-decile", "3")  # fmt: skip
    assert added.returncode == 0, added.stderr


def test_dockerfile_makes_the_volume_mount_points_its_users() -> None:
    """A fresh named volume takes the owner of the image's directory at its mount point; one
    that the image lacks comes up root's, and the aggregator (USER fedqi) could not write its
    keys there."""
    dockerfile = (AGG / "Dockerfile").read_text()
    assert re.search(r"^USER fedqi$", dockerfile, re.M)
    named = set(_compose()["volumes"])
    for mount in _compose()["services"]["aggregator"]["volumes"]:
        source, target = mount.split(":")[:2]
        if source in named:
            assert re.search(
                rf"^RUN install -d -o fedqi -g fedqi -m 0700 {re.escape(target)}$", dockerfile, re.M
            ), target
            assert dockerfile.index(target) < dockerfile.index("USER fedqi")


def test_dockerfile_copies_paths_that_exist() -> None:
    # the image is the aggregator's: it installs the aggregator extra (the base is the agent's)
    assert "pip install '.[aggregator]'" in (AGG / "Dockerfile").read_text()
    for line in (AGG / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), src


@pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)"
)
def test_nginx_accepts_the_proxy_config(tmp_path: Path) -> None:
    from tests.tls_helpers import write_pair

    tls = tmp_path / "tls"
    tls.mkdir()
    write_pair(tls / "fullchain.pem", tls / "privkey.pem")
    conf = (AGG / "nginx.conf").read_text()
    # The compose network resolves "aggregator"; here it is the loopback address.
    conf = conf.replace("server aggregator:", "server 127.0.0.1:")
    conf = conf.replace("/etc/nginx/tls/", f"{tls}/")
    conf = conf.replace("access_log /dev/stdout;", f"access_log {tmp_path}/access.log;")
    conf = conf.replace("error_log /dev/stderr warn;", f"error_log {tmp_path}/error.log warn;")
    conf = f"pid {tmp_path}/nginx.pid;\n" + conf
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    result = subprocess.run(
        ["nginx", "-t", "-c", str(path), "-p", str(tmp_path), "-g", f"error_log {tmp_path}/e.log;"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_systemd_service_runs_a_real_agent_command() -> None:
    unit = _unit(AGENT / "fedqi-agent.service")
    exec_start = shlex.split(unit["Service"]["ExecStart"])
    script = Path(exec_start[0]).name
    assert script in _console_scripts()
    assert " ".join(exec_start[1:]) in _cli_words("agent.cli")
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["UMask"] == "0077"
    home = unit["Service"]["Environment"].split("=", 1)
    assert home[0] == "FEDQI_AGENT_HOME"
    assert unit["Service"]["ReadWritePaths"] == home[1]
    timer = _unit(AGENT / "fedqi-agent.timer")
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_calendar_expression_is_valid() -> None:
    cal = _unit(AGENT / "fedqi-agent.timer")["Timer"]["OnCalendar"]
    result = subprocess.run(["systemd-analyze", "calendar", cal], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_windows_task_runs_a_real_agent_command() -> None:
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    root = ET.parse(AGENT / "fedqi-agent-task.xml").getroot()
    command = root.find("t:Actions/t:Exec/t:Command", ns)
    args = root.find("t:Actions/t:Exec/t:Arguments", ns)
    assert command is not None and args is not None
    exe = command.text.replace("\\", "/").rsplit("/", 1)[-1]  # type: ignore[union-attr]
    assert exe.removesuffix(".exe") in _console_scripts()
    words = shlex.split(args.text.replace("\\", "/"))  # type: ignore[union-attr]
    assert words[0] in _cli_words("agent.cli")
    assert "--home" in words
    assert root.find("t:Principals/t:Principal/t:RunLevel", ns).text == "LeastPrivilege"  # type: ignore[union-attr]
    # one task name: the file's import comment, its URI and docs/agent.md's schtasks command
    docs = re.search(
        r"schtasks /Create /XML\s+\S+ /TN (\S+?)`", (REPO / "docs" / "agent.md").read_text()
    )
    assert docs is not None
    name = docs.group(1)
    assert f"/TN {name} " in (AGENT / "fedqi-agent-task.xml").read_text()
    assert root.find("t:RegistrationInfo/t:URI", ns).text == "\\" + name  # type: ignore[union-attr]


def test_sample_agent_config_is_valid_and_complete(tmp_path: Path) -> None:
    from agent.home.settings import AgentSettings

    text = (AGENT / "agent.toml").read_text()
    data = tomllib.loads(text)
    AgentSettings(home=tmp_path, **data)  # every value in the sample is valid
    # every setting is at least mentioned (set or commented) in the sample
    for name, field in AgentSettings.model_fields.items():
        if name == "home":
            continue
        assert re.search(rf"^#?\s*\[?{name}\b", text, re.M), (
            f"{name} missing from deploy/agent/agent.toml"
        )
        sub = getattr(field.annotation, "model_fields", None)
        if sub:
            for subname in sub:
                assert re.search(rf"^#?\s*{subname}\s*=", text, re.M), f"{name}.{subname} missing"
