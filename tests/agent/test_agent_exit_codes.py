"""Every ``fedqi-agent`` and ``fedqi-demo`` exit code comes from one table, shown in --help and
in the docs; no command exits with a literal number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.errors import EXIT_CODE_MEANINGS, ExitCode

REPO = Path(__file__).resolve().parents[2]


def test_configuration_doc_lists_the_exit_code_table() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    table = text.split("### Exit codes", 1)[1].split("\n\n`audit verify`", 1)[0]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert codes == {int(c) for c in ExitCode}


def test_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main

    assert main(["--help"], {}) == 0
    out = " ".join(capsys.readouterr().out.split())
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert f"{int(code)} {' '.join(meaning.split())}" in out


def _help_meaning(code: int, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``fedqi-agent --help`` says exit ``code`` means, in one line."""
    from agent.cli import main

    assert main(["--help"], {}) == 0
    out = " ".join(capsys.readouterr().out.split())
    said = re.search(rf"(?:^| ){code} (.*?)(?= \d \w| ?$)", out.split("Exit codes:", 1)[1])
    assert said, out
    return said[1]


@pytest.mark.parametrize(
    ("files", "says"),
    [
        # Text after a closing quote: the csv module's strict mode refuses the line.
        ({"patients.csv": 'patient_id,birth_date,sex,registration_start\n1,1950-01-01,"F"x,2000-01-01\n'},
         "CSV extract"),
        ({"Patient.ndjson": '{"resourceType": "Patient", "id": \n'}, "FHIR"),
    ],
)  # fmt: skip
def test_a_malformed_extract_exits_with_the_code_help_gives_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str], says: str
) -> None:
    """A malformed CSV extract exited 4, which --help called "the practice database cannot be
    read": the code a malformed load exits with is the one --help gives to malformed input."""
    from agent.cli import main

    extract = tmp_path / "extract"
    extract.mkdir()
    for name, text in {
        "events.csv": "patient_id,date,code,value,unit,system\n",
        "medications.csv": "patient_id,date,code\n",
        **files,
    }.items():
        (extract / name).write_text(text, encoding="utf-8")
    command = "load-csv" if "patients.csv" in files else "load-fhir"
    target = extract if command == "load-csv" else extract / "Patient.ndjson"
    code = main([command, str(target), "--into", str(tmp_path / "p.sqlite")], {})
    err = capsys.readouterr().err
    assert code != 0 and "line" in err, err
    meaning = _help_meaning(code, capsys)
    assert "malformed" in meaning and says in meaning, (code, meaning)


def test_demo_help_lists_its_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from demo.cli import DEMO_EXIT_MEANINGS, main

    assert main(["--help"], {}) == 0
    out = " ".join(capsys.readouterr().out.split())
    for code, meaning in DEMO_EXIT_MEANINGS.items():
        assert f"{int(code)} {' '.join(meaning.split())}" in out
    demo_doc = (REPO / "docs" / "demo.md").read_text()
    assert all(f"{int(code)} " in demo_doc for code in DEMO_EXIT_MEANINGS)


LITERAL_EXIT = re.compile(
    r"exit_code\s*=\s*\d|exit_code=\d|typer\.Exit\(\s*\d|SystemExit\(\s*[1-9]|sys\.exit\(\s*[1-9]"
)


def test_no_literal_exit_codes() -> None:
    offenders = [
        f"{p.relative_to(REPO)}:{i}: {line.strip()}"
        for package in ("agent", "demo")
        for p in (REPO / package).rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if LITERAL_EXIT.search(line)
    ]
    assert offenders == []
