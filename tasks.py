"""Developer tasks (invoke). `invoke --list` shows them."""
from __future__ import annotations

import sys

from invoke import task

PY = sys.executable


@task
def test(c, k="", x=False):
    """Run the whole test suite (pytest, on all cores)."""
    args = ["-n", "auto"]
    if k:
        args += ["-k", repr(k)]
    if x:
        args.append("-x")
    c.run(f"{PY} -m pytest {' '.join(args)}", pty=False)


@task
def lint(c):
    """ruff over everything, mypy over host/."""
    c.run(f"{PY} -m ruff check host tests tasks.py")
    c.run(f"{PY} -m mypy")


@task(pre=[lint, test])
def ci(c):
    """What CI runs: lint, then the test suite."""


@task(help={"keep": "also keep the intermediate files (objects, call graphs, map) in this directory"})
def build_stub(c, keep=""):
    """Build the RAM stub (stub/ -> host/f4load/stub/f4load_stub.FLM), check it, print the size report."""
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "toolchain"))
    import build_stub as builder

    print(builder.compiler_version())
    with tempfile.TemporaryDirectory(prefix="f4load-stub-") as tmp:
        result = builder.build(Path(keep) if keep else Path(tmp))
        installed = builder.install(result)
    print(builder.size_report(result))
    for path in installed:
        print(f"installed {path.relative_to(Path(__file__).resolve().parent)}")
