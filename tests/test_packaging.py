"""What a user gets from the distributions: `python -m build` makes an sdist and a wheel; the wheel, installed
into a new virtual environment with no cross-compiler on PATH, programs the virtual chip; the unpacked sdist
rebuilds the stub and passes its own tests against that installation.

One test, because the build and the new environment are the expensive part (~15 s with a warm pip cache;
pip needs a package index for the dependencies and for build isolation, as CI has). No development tools are
in the environment when `f4load` runs: the wheel's dependencies alone must be enough.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email import message_from_string
from email.message import Message
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parent.parent
CROSS_COMPILER = "arm-none-eabi-gcc"
# The sdist's own tests that need its conftest, its stub sources and toolchain/, run against the installed wheel.
SDIST_TESTS = ["tests/test_image.py", "tests/test_stub_build.py"]
NOT_IN_SDIST = (".ci/", ".gitignore")  # this repository's CI, git's own file
# Link targets in Markdown ([text](target), [label]: target) and HTML (href="", src="").
LINK_TARGET = re.compile(r"\]\(([^)\s]+)|^ {0,3}\[[^\]]+\]:\s*(\S+)|(?:href|src)=\"([^\"]+)\"", re.MULTILINE)


def _run(args: List[str], **kwargs: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc


def _path_without_cross_compiler(tmp: Path) -> str:
    """/usr/bin and /bin as one directory of links, less the Arm cross toolchain: a machine without it."""
    tools = tmp / "bin-without-arm-gcc"
    tools.mkdir()
    for directory in (Path("/usr/bin"), Path("/bin")):
        for tool in directory.iterdir():
            if not tool.name.startswith("arm-none-eabi-") and not (tools / tool.name).exists():
                (tools / tool.name).symlink_to(tool)
    return str(tools)


def _wheel_metadata(wheel: zipfile.ZipFile) -> Message:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return message_from_string(wheel.read(name).decode())


def test_built_wheel_installs_runs_without_a_cross_compiler_and_sdist_passes_its_tests(tmp_path: Path) -> None:
    # --- build both distributions from a copy of the checkout (its files, not git's ignored ones) -------------
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout.splitlines()
    files = [name for name in listed if (REPO / name).is_file()]
    source = tmp_path / "source"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)])
    (sdist_path,) = dist.glob("f4load-*.tar.gz")
    (wheel_path,) = dist.glob("f4load-*.whl")
    license_text = (REPO / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text

    with zipfile.ZipFile(wheel_path) as wheel:
        names = set(wheel.namelist())
        licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert licenses and wheel.read(licenses[0]).decode() == license_text
        assert {"f4load/py.typed", "f4load/stub/f4load_stub.FLM", "f4load/stub/f4load_stub.json",
                "f4load/stub/f4load_protocol.h"} <= names
        metadata = _wheel_metadata(wheel)
    assert metadata["License-Expression"] == "Apache-2.0"
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL"))
    repository = urls["Repository"]

    # --- the sdist: every file of the checkout but this repository's CI ----------------------------------------
    sdist_root = tmp_path / "sdist"
    with tarfile.open(sdist_path) as sdist:
        members = [m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile() and "/" in m.name]
        sdist.extractall(sdist_root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = sdist_root.iterdir()
    wanted = {f for f in files if not f.startswith(NOT_IN_SDIST)}
    assert not wanted - set(members), "missing from the sdist (MANIFEST.in)"
    assert not [m for m in members if m.startswith(".ci/") or "__pycache__" in m or m.endswith(".pyc")]
    assert (unpacked / "LICENSE").read_text() == license_text

    # --- the long description: every link works from PyPI -----------------------------------------------------
    description = metadata.get_payload()
    targets = [next(t for t in m.groups() if t) for m in LINK_TARGET.finditer(description)]
    assert targets, "no links found in the long description"
    relative = [t for t in targets if not re.match(r"^(https?://|mailto:|#)", t)]
    assert not relative, f"relative links in the long description: {relative}"
    into_repository = [t for t in targets if t.startswith(repository + "/blob/main/")]
    for target in into_repository:
        path = target[len(repository + "/blob/main/"):].split("#")[0]
        assert (unpacked / path).exists(), f"{target}: no {path} in the sdist"

    # --- the wheel in a new environment, no development tools, no cross-compiler --------------------------------
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel_path)])
    _run([sys.executable, "-m", "pip", "--python", str(python), "check"])
    path = os.pathsep.join([str(venv / "bin"), _path_without_cross_compiler(tmp_path)])
    clean_env: Dict[str, str] = {
        "PATH": path, "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache"), "LANG": "C.UTF-8",
        "F4LOAD_SIM_STATE": str(tmp_path / "sim-state"), "F4LOAD_SIM_LINK": "ideal",
        "F4LOAD_BACKUP_DIR": str(tmp_path / "backups"),
    }
    probe = _run([str(python), "-c", "import importlib.util as u, shutil; "
                  f"print(shutil.which({CROSS_COMPILER!r}), u.find_spec('pytest'), u.find_spec('f4load').origin)"],
                 env=clean_env).stdout.split()
    assert probe[:2] == ["None", "None"], "the new environment has a cross-compiler or pytest"
    assert probe[2].startswith(str(venv)), "f4load is not the installed wheel"

    image = bytes(range(256)) * 16  # 4 KB
    app = tmp_path / "app.bin"
    app.write_bytes(image)
    # (`f4load FILE --probe sim`: the options after the file work with every version of the command line)
    run = _run([str(venv / "bin" / "f4load"), str(app), "--probe", "sim", "--json"], env=clean_env, cwd=tmp_path)
    report = json.loads(run.stdout)
    assert (report["result"], report["exit_code"], report["verified"]) == ("ok", 0, True)
    assert report["bytes_programmed"] == len(image)
    _run([str(venv / "bin" / "f4load"), "read", "0x08000000", str(len(image)), str(tmp_path / "back.bin"),
          "--probe", "sim"], env=clean_env, cwd=tmp_path)
    assert (tmp_path / "back.bin").read_bytes() == image

    # --- the sdist's own tests, with the test tools added and the cross-compiler back on PATH --------------------
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "pytest", "hypothesis"])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("PYTEST_", "F4LOAD_SIM"))}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")])
    assert shutil.which(CROSS_COMPILER, path=env["PATH"]), "the sdist's tests rebuild the stub"
    peer = REPO.parent / "shared" / "peers" / "STM32F4xx_2048.FLM"  # where the checkout's tests find it
    if peer.is_file():
        env.setdefault("F4LOAD_PEER_FLM", str(peer))
    tests = _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *SDIST_TESTS], cwd=unpacked, env=env)
    assert re.search(r"\d+ passed", tests.stdout) and " failed" not in tests.stdout and " error" not in tests.stdout
