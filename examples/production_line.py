"""A production line on f4load's Python API: program and verify one firmware on every board, log each chip's
unique ID (its serial number) with the outcome, and exit non-zero when any board failed.

    python examples/production_line.py firmware.hex                       # every probe attached, in turn
    python examples/production_line.py firmware.hex --probe sim:a --probe sim:b --log line.csv

The firmware is read and checked once, before any board is touched. Each board gets one line on stdout and one
row in the CSV log (appended): time, probe, unique ID, part, result, exit status, message. The exit status is
0 when every board passed, the failed boards' status when they share one (f4load.exit_status: 1 flash, 3 probe,
4 reset or link lost, 5 verify...), else 9. (`f4load firmware.hex --probe all` does the same from the shell,
with the boards in parallel; this script shows the API.)
"""
from __future__ import annotations

import argparse
import csv
import datetime
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import f4load

LOG_FIELDS = ["time", "probe", "unique_id", "part", "result", "exit_status", "message"]


def program_board(image: f4load.Image, probe: str) -> dict:
    """Program and verify one board; the log row, whatever happened."""
    row = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "probe": probe, "unique_id": "",
           "part": "", "result": "failed", "exit_status": 0, "message": ""}
    try:
        with f4load.Session(probe=probe) as session:
            assert session.info is not None
            row.update(unique_id=session.info.unique_id, part=session.info.part.name, probe=session.probe_label)
            outcome = session.program(image)      # erase what changes, keep the rest, verify by CRC
            session.verify(image)                 # and check the whole image once more
        row.update(result="passed", message=str(outcome))
    except f4load.F4LoadError as error:
        row.update(exit_status=error.exit_code, message=" ".join(str(error).split()))
    return row


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("firmware", help="the file to program (.hex, .elf, .srec, .bin at 0x08000000)")
    parser.add_argument("--probe", action="append", help="a probe (repeat for several); default: every one attached")
    parser.add_argument("--log", default="production-log.csv", help="CSV log to append to")
    args = parser.parse_args(argv)

    try:
        image = f4load.load_image(args.firmware)
        probes: List[str] = args.probe or [p.uid for p in f4load.list_probes()]
    except f4load.F4LoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    if not probes:
        print("error: no debug probe attached (f4load probes; --probe sim:NAME for virtual boards)", file=sys.stderr)
        return f4load.exit_status.PROBE

    log = Path(args.log)
    new_log = not log.exists()
    failures = set()
    with log.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
        if new_log:
            writer.writeheader()
        for probe in probes:
            row = program_board(image, probe)
            writer.writerow(row)
            handle.flush()
            print(f"{row['probe']}  {row['unique_id'] or '-':24}  {row['result']}  {row['message']}")
            if row["result"] != "passed":
                failures.add(row["exit_status"])
    if not failures:
        return f4load.exit_status.OK
    return failures.pop() if len(failures) == 1 else f4load.exit_status.BOARDS_FAILED


if __name__ == "__main__":
    sys.exit(main())
