"""What f4load prints, and where: results on stdout, everything else on stderr.

The rules a script relies on (docs/cli.md "Output"):

* stdout carries the result only: the summary line, `info`'s lines, `read -`'s bytes, or with `--json` exactly
  one JSON document, in every outcome. Anything else that would land there is sent to stderr instead: pyocd
  `print()`s some of its messages (in colour) on stdout, and they must never corrupt a JSON report. While a
  command runs, `sys.stdout` is pointed at stderr (`Console.foreign_output`) and f4load writes its own results
  to the real stdout it saved at start (`Console.out`).
* `-q` silences everything but errors: pyocd's prints then go nowhere, its logging is at ERROR.
* No ANSI colour unless stderr is a terminal and `NO_COLOR` is unset (https://no-color.org): escape
  sequences in what pyocd prints are removed otherwise.
* Logging (pyocd's and f4load's) goes to stderr at the level -q/-v ask for.
* The progress bar is drawn on stderr, only on a terminal, only without -q/--json.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
from typing import IO, Any, Callable, Iterator, Optional

import click

PROG = "f4load"
KIB = 1024
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def colour_allowed(stream: Optional[IO[str]] = None) -> bool:
    """ANSI colour on `stream` (default stderr): only on a terminal and when NO_COLOR is unset or empty."""
    stream = stream if stream is not None else sys.stderr
    return not os.environ.get("NO_COLOR") and bool(getattr(stream, "isatty", lambda: False)())


class _PlainText(io.TextIOBase):
    """A text stream that writes to whatever sys.stderr is at the time (click's test runner replaces it per
    invocation), without ANSI escapes unless colour is allowed."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        stream = sys.stderr
        stream.write(text if colour_allowed(stream) else _ANSI_ESCAPE.sub("", text))
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A logging handler on the current sys.stderr, without colour escapes."""

    def __init__(self) -> None:
        super().__init__(_PlainText())


_HANDLER = _StderrHandler()
_HANDLER.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))


def configure_logging(quiet: bool, verbose: int) -> None:
    """pyocd's and f4load's logging to stderr: errors only with -q (and --json), warnings by default, -vv
    info, -vvv debug."""
    level = (logging.ERROR if quiet else logging.WARNING if verbose < 2 else logging.INFO if verbose < 3
             else logging.DEBUG)
    for name in ("pyocd", "f4load"):
        logger = logging.getLogger(name)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
        logger.propagate = False
        logger.setLevel(level)


class Console:
    """The output of one command: `out` is the real stdout (results), `say` and `warn` write to stderr."""

    def __init__(self, as_json: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        self.as_json, self.quiet, self.verbose = as_json, quiet, verbose
        self.out: IO[str] = sys.stdout
        configure_logging(quiet or as_json, verbose)

    @property
    def talk(self) -> bool:
        """Human output on stdout (summary, info)."""
        return not self.quiet and not self.as_json

    def result(self, text: str) -> None:
        """A result line on the real stdout."""
        click.echo(text, file=self.out)

    def binary(self, data: bytes) -> None:
        """Raw bytes on the real stdout (`read ... -`)."""
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:  # a text-only stream (tests): latin-1 maps bytes to code points one to one
            self.out.write(data.decode("latin-1"))

    def warn(self, text: str) -> None:
        if not self.quiet:
            click.echo(f"{PROG}: warning: {text}", err=True)

    def note(self, text: str) -> None:
        """A remark for the human at the terminal (stderr; silent with -q)."""
        if not self.quiet:
            click.echo(f"{PROG}: {text}", err=True)

    @contextlib.contextmanager
    def foreign_output(self) -> Iterator[None]:
        """While the command runs, what other code prints on stdout (pyocd) goes to stderr, or nowhere with
        -q; f4load's own results go to `self.out`."""
        target: Any = open(os.devnull, "w") if self.quiet else _PlainText()  # noqa: SIM115
        try:
            with contextlib.redirect_stdout(target):
                yield
        finally:
            if self.quiet:
                target.close()


def error_line(text: str) -> None:
    """The one line of a failure, on stderr."""
    click.echo(f"{PROG}: error: {text}", err=True)


# --- the progress bar ------------------------------------------------------------------------------------------

def amount(done: int, total: int) -> str:
    """"12/256 KB", or in bytes when the total is under 1 KB ("84/84 bytes")."""
    if total < KIB:
        return f"{done:,}/{total:,} bytes"
    return f"{done // KIB:,}/{total // KIB:,} KB"


class ProgressBar:
    """A progress bar on stderr for erase and program work, in bytes, with the rate (virtual time on the
    virtual chip, else wall time). Shown only on a terminal and without --quiet/--json.

    `kind_of(operation)` names a stub command's kind ("erase", "program") or None for work outside the bar
    (the verify CRCs); `virtual_now()` is the virtual clock in seconds, or None on real hardware."""

    def __init__(self, console: Console, kind_of: Callable[[Any], Optional[str]],
                 virtual_now: Callable[[], Optional[float]]) -> None:
        self.enabled = console.talk and sys.stderr.isatty()
        self.kind_of, self.virtual_now = kind_of, virtual_now
        self.bar: Any = None
        self.done = 0
        self.start_wall = 0.0
        self.start_virtual: Optional[float] = None

    def begin(self, total: int, label: str) -> None:
        if not self.enabled or total <= 0:
            return
        self.start_wall, self.start_virtual = time.monotonic(), self.virtual_now()
        self.bar = click.progressbar(length=total, label=label, file=sys.stderr, show_eta=False,
                                     show_percent=True, width=30, item_show_func=lambda item: item,
                                     color=colour_allowed())
        self.bar.__enter__()

    def __call__(self, operation: Any, size: int) -> None:
        """A stub command completed (f4load.stream's progress callback)."""
        kind = self.kind_of(operation)
        if self.bar is None or kind is None:
            return
        self.done += size
        virtual_now = self.virtual_now()
        if virtual_now is not None and self.start_virtual is not None:
            elapsed, clock = virtual_now - self.start_virtual, " virtual"
        else:
            elapsed, clock = time.monotonic() - self.start_wall, ""
        # No rate for work under 1 KB: a few buffers' time is mostly the link's latency, not a throughput.
        rate = f"{self.done / elapsed / KIB:,.0f} KB/s{clock}" if elapsed > 0 and self.bar.length >= KIB else ""
        self.bar.update(size, f"{kind:<7} {amount(self.done, self.bar.length)} {rate}".rstrip())

    def end(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
