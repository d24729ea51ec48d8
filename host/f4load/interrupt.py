"""Ctrl-C (SIGINT) and SIGTERM, taken only where the host can stop cleanly.

Python turns SIGINT into a KeyboardInterrupt raised at whatever bytecode runs when the signal arrives. In
f4load that is often inside a callback of the virtual chip's Unicorn core (ctypes swallows it there: "Exception
ignored on calling ctypes callback"), or between two probe accesses of a sequence that must not be cut (the
stub unlocked FLASH_CR and is erasing). So while target work is under way, a signal only *records* the request
(`deferred()`), and the host asks at its safe points (`check()`, `requested()`):

    host                                         signal handler
    with interrupt.deferred():                   SIGINT/SIGTERM: remember it, return
        ... probe accesses, the stream ...
        interrupt.check()   # safe point         (raises Interrupted when a signal came)

The stream (f4load.stream) stops at the end of the command the stub is running (it turns the commands still
queued into STOP), then halts the core and locks FLASH_CR; `Interrupted` then leaves through the usual error
paths, and the command line exits with status 130 and one line. The same code runs on a real probe: pyocd's
USB transfers are never cut in the middle either.

Outside any `deferred()` block the handlers `install()` puts in place raise `Interrupted` at once, as Python's
own handler would (a prompt, reading the input file). SIGTERM is treated like SIGINT. Signal handlers can only
be set from the main thread: elsewhere `deferred()` changes nothing (a thread cannot receive the signal anyway).

`deferred(raise_on_exit=True)` is for code that is not itself a host, such as the virtual chip's `advance()`:
when it is the outermost deferral and a signal came, it raises at its own exit, where its state is consistent.
Under f4load's Session (an outer deferral) it never raises: the Session's safe points do.

This module imports nothing heavy: `python -m f4load` installs it before importing the rest.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Dict, Optional, Type

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = 130  # 128 + SIGINT: what a shell reports for a program stopped by Ctrl-C


class Interrupted(KeyboardInterrupt):
    """The user asked f4load to stop (Ctrl-C or SIGTERM), raised at a safe point. `str()` is the one-line
    message, "interrupted (Ctrl-C): <detail>"; `signal_name` is "SIGINT" or "SIGTERM"."""

    def __init__(self, detail: str = "", signal_name: str = "SIGINT") -> None:
        text = f"interrupted ({describe_signal(signal_name)})"
        super().__init__(f"{text}: {detail}" if detail else text)
        self.signal_name = signal_name

    def add_detail(self, text: str) -> None:
        """Append `text` to the message (what the way out did: core halted, FLASH_CR locked...), once: the
        layers an interrupt passes through on its way out may each report the same fact."""
        if self.args and text in str(self.args[0]).split("; "):
            return
        self.args = (f"{self.args[0]}; {text}" if self.args else text,)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"


def describe_signal(name: str) -> str:
    return "Ctrl-C" if name == "SIGINT" else name


class _State:
    def __init__(self) -> None:
        self.signum: Optional[int] = None   # the last signal that came, until cleared
        self.count = 0                      # signals since the outermost deferral began
        self.depth = 0                      # deferred() blocks open (main thread)
        self.saved: Dict[int, Any] = {}     # handlers replaced by the outermost deferred() that installed ours
        self.installed = False              # install() was called: our handlers stay for the process


_STATE = _State()


def _handler(signum: int, _frame: Optional[FrameType]) -> None:
    _STATE.signum = signum
    _STATE.count += 1
    if _STATE.depth == 0:  # no target work under way: stop at once, as Python's own handler does
        raise Interrupted("no work on the target was under way", signal_name=signal.Signals(signum).name)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _ours_installed() -> bool:
    return all(signal.getsignal(s) is _handler for s in SIGNALS)


def install() -> None:
    """Put f4load's handlers in place for the rest of the process (the command line calls this first):
    SIGINT and SIGTERM raise Interrupted at once outside `deferred()` blocks and are recorded inside them."""
    if not _in_main_thread():
        return
    for s in SIGNALS:
        signal.signal(s, _handler)
    _STATE.installed = True


class deferred:
    """A block during which SIGINT/SIGTERM are only recorded (module docstring). Nests; cheap when nested.

    On entering the outermost block an old request is forgotten. `raise_on_exit`: if this is the outermost
    block, no exception is leaving it and a signal came, raise Interrupted when it ends."""

    __slots__ = ("raise_on_exit", "_active", "_installed_here")

    def __init__(self, raise_on_exit: bool = False) -> None:
        self.raise_on_exit = raise_on_exit
        self._active = False
        self._installed_here = False

    def __enter__(self) -> deferred:
        if not _in_main_thread():
            return self
        self._active = True
        if _STATE.depth == 0:
            _STATE.signum = None
            _STATE.count = 0
            if not _ours_installed():
                _STATE.saved = {s: signal.getsignal(s) for s in SIGNALS}
                for s in SIGNALS:
                    signal.signal(s, _handler)
                self._installed_here = True
        _STATE.depth += 1
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if not self._active:
            return
        self._active = False
        _STATE.depth -= 1
        if _STATE.depth:
            return
        if self._installed_here:
            self._installed_here = False
            for s, previous in _STATE.saved.items():
                signal.signal(s, previous if previous is not None else signal.SIG_DFL)
            _STATE.saved = {}
        if self.raise_on_exit and exc_type is None:
            check()


def requested() -> Optional[str]:
    """The name of the signal that asked f4load to stop ("SIGINT", "SIGTERM"), or None."""
    return signal.Signals(_STATE.signum).name if _STATE.signum is not None else None


def insisted() -> bool:
    """A second signal came while the first one was being honoured: stop waiting for a clean end."""
    return _STATE.count >= 2


def check(detail: str = "") -> None:
    """A safe point: raise Interrupted ("interrupted (Ctrl-C): <detail>") if a signal came."""
    name = requested()
    if name is not None:
        raise Interrupted(detail, signal_name=name)


def clear() -> None:
    """Forget a recorded request (after it has been reported)."""
    _STATE.signum = None
    _STATE.count = 0
