"""The commands about the target and the probe: info, reset, probes, diagnose."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import click

from f4load import __version__, exit_status
from f4load.cli.group import (
    EXIT_CODES_HELP,
    Command,
    Invocation,
    cli,
    global_options,
    new_report,
)
from f4load.console import Console, error_line

if TYPE_CHECKING:
    from f4load.session import Session


@cli.command(epilog=EXIT_CODES_HELP, short_help="Part, identity, flash size, unique ID, option bytes, supply.")
@global_options
def info(**options: Any) -> None:
    """Show the part, its identity (DEV_ID/REV_ID), flash size, unique ID, option bytes and supply."""
    command = Command(options)
    command.run(new_report("info"), lambda session: None)


@cli.command(epilog=EXIT_CODES_HELP, short_help="Reset the target (and let it run, or halt it).")
@click.option("--halt", "halt", is_flag=True, help="Halt the core at its reset vector instead of letting it run.")
@global_options
def reset(halt: bool, **options: Any) -> None:
    """Reset the target: the application starts from its reset vector, or with --halt the core waits there
    (for a debugger). The connection leaves the running core alone until the reset."""
    command = Command(options)
    report = new_report("reset", details={"halt": halt})

    def work(session: Session) -> None:
        report.details.update(session.reset(halt=halt))

    command.run(report, work, session_options={"connect": "attach", "reset_run": False})


@cli.command(short_help="List the debug probes attached.")
@click.option("--json", "as_json", is_flag=True, default=None, help="One JSON document on stdout.")
@click.option("-q", "--quiet", "quiet", is_flag=True, default=None, help="Only the unique IDs.")
def probes(as_json: Optional[bool], quiet: Optional[bool]) -> None:
    """List the debug probes pyocd sees (ST-Link, CMSIS-DAP, J-Link, ...), and how to reach the virtual
    STM32F407. Exit status 0 whether or not any probe is attached."""
    import json

    from f4load import probes as probe_choice
    from f4load.errors import F4LoadError

    invocation = click.get_current_context().find_object(Invocation)
    before = invocation.before if invocation is not None else {}
    as_json = bool(as_json or before.get("as_json"))
    quiet = bool(quiet or before.get("quiet"))
    console = Console(as_json=as_json, quiet=quiet)
    with console.foreign_output():
        try:
            found = probe_choice.describe_all(probe_choice.attached())
        except F4LoadError as error:
            error_line(str(error))
            raise click.exceptions.Exit(error.exit_code) from None
    virtual = {"probe": "sim", "named_boards": "sim:NAME", "description": probe_choice.SIM_DESCRIPTION,
               "note": "the virtual chip is never chosen by --probe auto or all; ask for it by name"}
    if as_json:
        console.result(json.dumps({"f4load": __version__, "command": "probes", "result": "ok", "exit_code": 0,
                                   "probes": [vars(p) for p in found], "virtual": virtual}, indent=2))
        return
    if quiet:
        for p in found:
            console.result(p.uid)
        return
    if found:
        width = max(len(p.uid) for p in found)
        for p in found:
            console.result(f"{p.uid:<{width}}  {p.vendor}  {p.product}")
    else:
        console.result("no debug probe attached (pyocd sees no ST-Link, CMSIS-DAP or J-Link)")
    console.result("virtual STM32F407: --probe sim (or sim:NAME for a named virtual board; F4LOAD_PROBE=sim makes "
                   "it the default)")


# --- diagnose --------------------------------------------------------------------------------------------

@cli.command(epilog=EXIT_CODES_HELP, short_help="Find out why a board does not erase or program.")
@click.option("--attach", "attach", is_flag=True,
              help="Look at the running target (connect without reset): shows what the application does to the "
                   "flash interface (sticky FLASH_SR flags, FLASH_CR locked by a wrong key, a started IWDG), "
                   "which a connection under reset hides.")
@click.option("--psize", "psize", type=click.Choice(["x8", "x16", "x32"]), default=None,
              help="The parallelism you intend to use (or another tool uses): checked against the supply.")
@click.option("--trial-erase", "trial_sector", type=int, default=None, metavar="SECTOR",
              help="Erase this sector on purpose (its contents are LOST) and report the exact FLASH_SR bits, the "
                   "time against the datasheet, and whether the chip reset during it.")
@click.option("--yes", "yes", is_flag=True, help="Do not ask before the trial erase.")
@global_options
def diagnose(attach: bool, psize: Optional[str], trial_sector: Optional[int], yes: bool, **options: Any) -> None:
    """Check everything that makes an STM32F4 refuse to erase or program, and say how to fix it.

    A checklist with a verdict per line (ok / warning / problem): identity (clone detection), supply versus
    parallelism and BOR level, read and write protection, watchdog option, flash interface state, reset
    causes, and with --trial-erase a real erase of one sector. The summary names the most likely cause first
    and the command that fixes it. Exit status 0 when nothing was found, 6 when the verdict is "problem", 7
    when it is "warning" (so a production line can gate on it).
    """
    command = Command(options)
    command.strict_identity = False
    if attach:
        command.settings.connect = "attach"
    report = new_report("diagnose")
    if trial_sector is not None and not yes:
        if command.settings.as_json:
            raise click.UsageError("--trial-erase with --json needs --yes (it destroys that sector)")
        command.several_boards_need = "the trial erase destroys a sector on each board: add --yes"

    def work(session: Session) -> None:
        from f4load.diagnose import diagnose as run_diagnosis

        result = run_diagnosis(session, psize=psize, trial_sector=trial_sector)
        report.details["diagnosis"] = result.as_json()
        report.text_lines = result.lines()
        report.exit_code = exit_status.DIAGNOSE[result.verdict]

    confirm = (f"The trial erase destroys the contents of sector {trial_sector}. Go on?"
               if trial_sector is not None and not yes else None)
    command.run(report, work, confirm=confirm)
