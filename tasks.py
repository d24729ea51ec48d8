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
