"""Several boards at once, as on a production line: one worker process per probe, all in parallel.

`f4load app.bin --probe A --probe B` (or `--probe all`, every probe attached; or `--probe sim:a --probe sim:b`,
named virtual boards) runs the same command on each board. Each board gets a worker of its own: a child
`python -m f4load` with the same arguments, one `--probe` and `--json`. A process per board, not a thread:
each pyocd session, its USB handle and (for virtual boards) its Unicorn core live alone in their process, the
boards really run in parallel on several cores, and a crash of one cannot take the others down.

The parent has already checked the files (a bad file fails once, before any worker starts). It prints one
line per board as each finishes, naming the probe and the chip's unique ID - the serial number a production
log wants - and then a last line with the count of boards that failed and why. With --json it prints one
document holding each board's own report, keyed by the probe's unique ID.

Exit status: 0 when every board succeeded; else the status the failed boards share, or BOARDS_FAILED (9) when
they failed for different reasons. Ctrl-C (or SIGTERM) is passed on to every worker once: each stops at its
next safe point and locks its FLASH_CR, and the parent exits 130. Workers run in sessions of their own, so a
terminal's Ctrl-C reaches them only through the parent.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from f4load import __version__, exit_status
from f4load.console import Console, error_line

PROBE_OPTION = "--probe"


def worker_argv(argv: Sequence[str], probe: str) -> List[str]:
    """The arguments of the worker for `probe`: the command line as typed, without its --probe options, with
    `--probe PROBE --json` added."""
    out: List[str] = []
    skip = False
    for index, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == "--":
            out += argv[index:]
            break
        if token == PROBE_OPTION:
            skip = True
            continue
        if token.startswith(PROBE_OPTION + "="):
            continue
        out.append(token)
    # Options after `--` would be read as file names: put ours before it.
    cut = out.index("--") if "--" in out else len(out)
    return [*out[:cut], PROBE_OPTION, probe, "--json", *out[cut:]]


@dataclass
class BoardResult:
    """One board's outcome: its worker's JSON report (or a stand-in when the worker did not produce one)."""
    probe: str
    exit_code: int
    report: Dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.exit_code == exit_status.OK

    @property
    def label(self) -> str:
        return (self.report.get("probe") or {}).get("description") or self.probe

    @property
    def unique_id(self) -> Optional[str]:
        return (self.report.get("target") or {}).get("unique_id")

    @property
    def uid(self) -> str:
        return (self.report.get("probe") or {}).get("uid") or self.probe

    def line(self) -> str:
        """"[virtual STM32F407 (sim:a), unique ID ...] app.bin -> ..." or "[...] failed (exit 1): why"."""
        who = self.label + (f", unique ID {self.unique_id}" if self.unique_id else "")
        if self.ok:
            return f"[{who}] {self.report.get('summary') or 'done'}"
        error = (self.report.get("error") or {}).get("message") or "failed"
        return f"[{who}] failed (exit {self.exit_code}): {error.splitlines()[0]}"


def _worker_report(command: str, probe: str,
                   process: subprocess.CompletedProcess) -> BoardResult:  # type: ignore[type-arg]
    try:
        report = json.loads(process.stdout)
        if not isinstance(report, dict):
            raise ValueError("not an object")
    except ValueError:
        # A worker that died without its report (killed, crashed): a report of the same shape that says so.
        from f4load.report import Report

        last = (process.stderr or "").strip().splitlines()
        stand_in = Report(command, exit_code=process.returncode or exit_status.FLASH, probe_requested=probe)
        stand_in.error_override = {"type": "WorkerError",
                                   "message": f"the worker for {probe} ended without a report "
                                              f"(exit {process.returncode})" + (f": {last[-1]}" if last else "")}
        report = stand_in.as_json()
    return BoardResult(probe, int(report.get("exit_code") or process.returncode), report)


def run(command: str, argv: Sequence[str], probes: Sequence[str], console: Console) -> int:
    """Run the command of `argv` on every probe in parallel; print a line per board and a last line (or one
    JSON document); return the exit status (module docstring)."""
    env = dict(os.environ)
    workers: Dict[str, subprocess.Popen] = {  # type: ignore[type-arg]
        probe: subprocess.Popen([sys.executable, "-m", "f4load", *worker_argv(argv, probe)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        for probe in probes}
    # One reader thread per worker drains its pipes; the results come back through a queue, never through
    # Thread.join: a signal that interrupts a join can leave the thread looking finished while it still runs.
    finished: queue.Queue[Tuple[str, subprocess.CompletedProcess]] = queue.Queue()  # type: ignore[type-arg]

    def read(probe: str, process: subprocess.Popen) -> None:  # type: ignore[type-arg]
        stdout, stderr = process.communicate()
        finished.put((probe, subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)))

    for item in workers.items():
        threading.Thread(target=read, args=item, daemon=True).start()
    results: Dict[str, BoardResult] = {}
    interrupted = False
    while len(results) < len(workers):
        try:
            probe, done = finished.get(timeout=0.1)
        except queue.Empty:
            continue
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM: each worker stops at its own next safe point and locks its FLASH_CR.
            interrupted = True
            for process in workers.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
            continue
        result = results[probe] = _worker_report(command, probe, done)
        if console.talk:
            console.result(result.line())
        elif not console.as_json and not result.ok:
            error_line(result.line())
        if console.verbose and done.stderr.strip():
            for text in done.stderr.rstrip().splitlines():
                console.note(f"[{result.label}] {text}")
    ordered = [results[probe] for probe in probes]
    status = exit_status.INTERRUPTED if interrupted else overall_status([r.exit_code for r in ordered])
    failed = [r for r in ordered if not r.ok]
    if console.as_json:
        console.result(json.dumps({
            "f4load": __version__, "format": 1, "command": command,
            "result": "ok" if status == exit_status.OK else "failed", "exit_code": status,
            "boards": {r.uid: r.report for r in ordered}, "failed": [r.uid for r in failed]}, indent=2))
    elif not console.quiet:
        text = f"{len(ordered)} boards: {len(ordered) - len(failed)} ok"
        if failed:
            text += ", failed: " + "; ".join(f"{r.label} (exit {r.exit_code})" for r in failed)
        console.result(text)
    return status


def overall_status(codes: Sequence[int]) -> int:
    """0 when every board succeeded; the failed boards' status when they share one; else BOARDS_FAILED."""
    failed = {code for code in codes if code != exit_status.OK}
    if not failed:
        return exit_status.OK
    return failed.pop() if len(failed) == 1 else exit_status.BOARDS_FAILED
