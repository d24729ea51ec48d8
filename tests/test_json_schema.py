"""`--json` output matches docs/report.schema.json: real output of every command, in success and failure."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import jsonschema
import pytest
from click.testing import CliRunner

from f4load.cli import cli
from f4load.sim import faults
from f4load.sim.state import board_dir

REPO = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())


def validate(document: Dict[str, Any]) -> None:
    jsonschema.validate(document, SCHEMA, cls=jsonschema.Draft202012Validator)


def json_of(*args: object) -> Dict[str, Any]:
    result = CliRunner().invoke(cli, ["--json", *map(str, args)], catch_exceptions=False)
    document: Dict[str, Any] = json.loads(result.stdout)
    assert document["exit_code"] == result.exit_code
    return document


def app(tmp_path: Path, size: int = 20_000, seed: int = 3, name: str = "app.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


# (faults injected first, arguments, the expected result): every command, and every class of failure.
CASES: List[Any] = [
    (None, ["{app}"], "ok"),
    (None, ["{app}", "{other}@0x08020000", "--no-verify"], "ok"),
    ("wrp=0-3", ["{app}"], "failed"),                        # protection, found before any erase
    ("sticky=pgserr", ["{app}", "--connect", "attach"], "ok"),
    ("reset=erase:1", ["{app}", "--no-keep"], "failed"),     # over old data, the target resets mid-erase
    (None, ["{missing}"], "failed"),                         # bad input file
    (None, ["erase", "0-1"], "ok"),
    (None, ["erase", "--chip", "--force"], "ok"),
    (None, ["verify", "{app}"], "failed"),                   # blank chip: a verify mismatch
    (None, ["read", "0x08000000", "64", "{out}"], "ok"),
    (None, ["info"], "ok"),
    ("clone", ["info"], "ok"),
    (None, ["reset", "--halt"], "ok"),
    (None, ["diagnose"], "ok"),
    ("wrp=0-3", ["diagnose", "--trial-erase", "1", "--yes"], "failed"),
    (None, ["protect", "5"], "ok"),
    (None, ["unprotect", "--all"], "ok"),
    ("rdp1", ["rdp", "0", "--yes"], "ok"),
    (None, ["option-bytes"], "ok"),
    (None, ["option-bytes", "--bor", "2"], "ok"),
    (None, ["info", "--probe", "nosuch"], "failed"),         # no such probe
    (None, ["info", "--frequency", "fast"], "failed"),       # usage error, before any command ran
]


@pytest.mark.parametrize("fault, args, expected", CASES, ids=[" ".join(c[1]) + (f" [{c[0]}]" if c[0] else "")
                                                              for c in CASES])
def test_every_command_prints_a_document_the_schema_accepts(chip: Path, tmp_path: Path, fault: Optional[str],
                                                            args: List[str], expected: str) -> None:
    names = {"app": app(tmp_path), "other": app(tmp_path, 3000, 4, "other.bin"), "missing": tmp_path / "none.bin",
             "out": tmp_path / "out.bin"}
    if fault and fault.startswith("reset="):
        assert json_of(app(tmp_path, 20_000, 9, "old.bin"))["result"] == "ok"  # sectors to erase
    if fault:
        faults.inject(str(chip), fault)
    document = json_of(*[a.format(**names) for a in args])
    validate(document)
    assert document["result"] == expected


def test_probes_and_several_boards_print_documents_the_schema_accepts(sim_state_dir: Path, tmp_path: Path) -> None:
    env = dict(os.environ, F4LOAD_SIM_LINK="ideal")
    faults.inject(str(board_dir("b")), "wrp=0-3")
    image = app(tmp_path)
    for args in (["probes", "--json"], ["--json", str(image), "--probe", "sim:a", "--probe", "sim:b"]):
        result = subprocess.run([sys.executable, "-m", "f4load", *args], env=env, capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL)
        validate(json.loads(result.stdout))


def test_the_schema_rejects_a_report_with_a_field_missing(chip: Path) -> None:
    document = json_of("info")
    del document["target"]
    with pytest.raises(jsonschema.ValidationError):
        validate(document)
