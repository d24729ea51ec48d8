"""`f4load-sim serve` as a child process, for the bench and the tests: started on a free port of 127.0.0.1,
stopped with SIGTERM (which saves its boards)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Optional, Sequence

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class ServerProcess:
    """A running `f4load-sim serve --port 0` on the state directory `state`."""

    def __init__(self, state: Path, link: str = "stlink-v2", boards: Sequence[str] = (), faults: Sequence[str] = (),
                 log_path: Optional[Path] = None, cwd: Optional[Path] = None, startup_s: float = 60) -> None:
        self.state = Path(state)
        self.log_path = log_path
        command = [sys.executable, "-m", "f4load.sim.cli", "--state", str(state), "serve", "--port", "0",
                   "--link", link, *(f"--board={name}" for name in boards), *faults]
        log: IO[str]
        log = open(log_path, "w") if log_path is not None else open(os.devnull, "w")  # noqa: SIM115 - child's
        with log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=cwd,
                                            env=dict(os.environ))
        self.port = self._wait_for_port(startup_s)

    def _wait_for_port(self, startup_s: float) -> int:
        deadline = time.monotonic() + startup_s
        assert self.process.stdout is not None
        for line in self.process.stdout:
            match = LISTENING.search(line)
            if match:
                return int(match.group(1))
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError(f"f4load-sim serve did not start: {self.log()}")

    @property
    def uid(self) -> str:
        """The probe unique ID (pyocd, f4load) of the server's first board."""
        return f"stlink-tcp:127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path is not None and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        """Stop the server (SIGTERM: it lets the flash settle and saves every board) and return its status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            status = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return status

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
