"""deploy/ is checked as far as this machine allows: files parse, the commands they run exist,
and the compose file, proxy, image and service units agree with the settings."""

from __future__ import annotations

import configparser
import datetime as dt
import re
import shlex
import shutil
import subprocess
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
            assert cmd in words, cmd
    assert "fedqi-aggregator" in _console_scripts()


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
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedqi.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
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
