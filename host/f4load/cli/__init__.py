"""`f4load`: the command line. `f4load app.bin` is file -> image -> plan -> stub -> probe -> flash.

    f4load app.bin [more.hex ...]      program (same as `f4load program ...`)
    f4load erase 0-3,5 | --chip        erase sectors
    f4load verify app.hex              compare the flash with a file (by CRC on the target)
    f4load read 0x08000000 16K out.bin read memory into a file
    f4load info                        part, identity, flash size, unique ID, option bytes, supply
    f4load reset [--halt]              reset the target
    f4load probes                      list the debug probes attached

Global options (`--probe`, `--json`, `-q`, `-v`, ...) go before or after the command name. Each command opens a
`f4load.session.Session` (connect, identify), does its work and leaves the target in a known state; with several
probes (`--probe` repeated, or `--probe all`) each board runs in its own worker (`f4load.boards`). Results are
text or, with --json, one JSON document (`f4load.report`, docs/report.schema.json); failures are one line on
stderr and an exit status per class of failure (`f4load.exit_status`).

The package: `group` (the click group, global options, `Command` that runs a command's work and prints its
report), `flash` (program, erase, verify, read), `target` (info, reset, probes, diagnose), `option_bytes`
(protect, unprotect, rdp, option-bytes).

Start-up: this package imports click and nothing heavy. pyocd, Unicorn, cffi and the file-format libraries are
imported by the commands that need them, so `f4load --help` and `--version` answer without loading them.
"""
from __future__ import annotations

# The commands register themselves on the group when their modules are imported.
from f4load.cli import flash, option_bytes, target  # noqa: F401
from f4load.cli.group import (  # noqa: F401 - the names scripts and tests use
    EXIT_CODES_HELP,
    EXIT_DECLINED,
    EXIT_DIAGNOSE_PROBLEM,
    EXIT_DIAGNOSE_WARNING,
    EXIT_FLASH,
    EXIT_INTERRUPTED,
    EXIT_LINK,
    EXIT_OK,
    EXIT_PROBE,
    EXIT_USAGE,
    EXIT_VERIFY,
    Command,
    Settings,
    cli,
    exit_code_for,
    main,
)
from f4load.console import amount as _amount  # noqa: F401 - the progress text, for its tests
