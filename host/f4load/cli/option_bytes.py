"""The option-byte commands: protect, unprotect, rdp, option-bytes (RM0090 3.7, 3.8.6)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

import click

from f4load.cli.group import (
    EXIT_CODES_HELP,
    Command,
    cli,
    global_options,
    new_report,
    sector_indexes,
)

if TYPE_CHECKING:
    from f4load.report import Report
    from f4load.session import Session


def _option_change(command: Command, report: Report, change: Callable[[Session], Any], allow_rdp2: bool = False
                   ) -> None:
    """Run `change(session)` -> the new option bytes (None: nothing to do), program them, report both."""
    def work(session: Session) -> None:
        assert session.info is not None
        before = session.info.options
        new = change(session)
        report.details["before"] = _options_json(before, session)
        if new is None:
            report.details["after"] = report.details["before"]
            return
        after = session.set_option_bytes(new, allow_rdp2=allow_rdp2)
        report.details["after"] = _options_json(after, session)
        report.details["changed"] = [f"{name} {old} -> {value}" for name, old, value in before.differences(after)]

    command.run(report, work)


def _options_json(options: Any, session: Session) -> Dict[str, Any]:
    assert session.info is not None
    return {"optcr": options.optcr, "rdp_level": options.rdp_level, "rdp": options.rdp, "nwrp": options.nwrp,
            "write_protected_sectors": options.write_protected(session.info.part),
            "wdg_sw": options.software_watchdog, "bor_level": options.bor_level, "bor": options.bor_name,
            "nrst_stop": not options.reset_on_stop, "nrst_stdby": not options.reset_on_standby}




def _check_sectors(session: Session, indexes: Sequence[int]) -> None:
    session._sectors(indexes)  # UsageError for a sector the part does not have


@cli.command(epilog=EXIT_CODES_HELP, short_help="Write-protect sectors (option bytes nWRP).")
@click.argument("sectors")
@global_options
def protect(sectors: str, **options: Any) -> None:
    """Write-protect SECTORS (e.g. 0-3): their nWRP bits become 0, and erase/program of them fails with WRPERR
    until `f4load unprotect` (RM0090 3.7.1)."""
    indexes = sector_indexes(sectors)
    command = Command(options)

    def change(session: Session) -> Any:
        assert session.info is not None
        _check_sectors(session, indexes)
        return session.info.options.protecting(indexes)

    _option_change(command, new_report("protect", details={"sectors": indexes}), change)


@cli.command(epilog=EXIT_CODES_HELP, short_help="Remove write protection (option bytes nWRP).")
@click.argument("sectors", required=False)
@click.option("--all", "all_sectors", is_flag=True, help="Every sector of the part.")
@global_options
def unprotect(sectors: Optional[str], all_sectors: bool, **options: Any) -> None:
    """Remove the write protection of SECTORS (e.g. 0-3) or, with --all, of every sector (nWRP bits to 1).
    The flash contents are not touched."""
    if all_sectors == bool(sectors):
        raise click.UsageError("give either SECTORS (e.g. 0-3) or --all")
    indexes = sector_indexes(sectors) if sectors else []
    command = Command(options)

    def change(session: Session) -> Any:
        assert session.info is not None
        chosen = list(range(len(session.info.part.sectors))) if all_sectors else indexes
        _check_sectors(session, chosen)
        return session.info.options.unprotecting(chosen)

    _option_change(command, new_report("unprotect", details={"sectors": indexes or "all"}), change)


RDP2_FLAG = "--i-understand-rdp2-is-permanent"


@cli.command(epilog=EXIT_CODES_HELP, short_help="Set the read-out protection level (0 mass-erases the flash).")
@click.argument("level", type=click.Choice(["0", "1", "2"]))
@click.option("--yes", "yes", is_flag=True, help="Do not ask before going from level 1 to 0 (a mass erase).")
@click.option(RDP2_FLAG, "rdp2_ok", is_flag=True,
              help="Needed for level 2: it is PERMANENT. The debug port is disabled for good and the option "
                   "bytes can never change again; the chip can never be reprogrammed over SWD.")
@global_options
def rdp(level: str, yes: bool, rdp2_ok: bool, **options: Any) -> None:
    """Set the read-out protection LEVEL (RM0090 3.7.3).

    \b
    0  no protection. From level 1 this MASS-ERASES the whole flash first (all data lost).
    1  flash cannot be read, erased or programmed while a debugger is attached.
    2  PERMANENT: debug disabled for good. Refused without --i-understand-rdp2-is-permanent.
    """
    if level == "2" and not rdp2_ok:
        raise click.UsageError(f"RDP level 2 is permanent: it disables the debug port (SWD/JTAG) for good and "
                               f"freezes the option bytes, so this chip could never be erased, reprogrammed or "
                               f"debugged again. If that is really what you want, add {RDP2_FLAG}")
    command = Command(options)
    if level == "0" and not yes:
        if command.settings.as_json:
            raise click.UsageError("going to RDP level 0 mass-erases the whole flash: add --yes")
        command.several_boards_need = "going to RDP level 0 mass-erases every board: add --yes"

    def change(session: Session) -> Any:
        from f4load.option_bytes import RDP_LEVEL1
        from f4load.part import KB
        from f4load.registers import RDP_LEVEL0, RDP_LEVEL2

        assert session.info is not None
        current = session.info.options
        if current.rdp_level == int(level):
            return None
        if level == "0" and not yes:
            command.ask(f"Going from RDP level {current.rdp_level} to 0 MASS-ERASES the whole flash of the "
                        f"{session.info.part.name} ({session.info.part.flash_size // KB} KB). Go on?")
        return current.with_rdp({"0": RDP_LEVEL0, "1": RDP_LEVEL1, "2": RDP_LEVEL2}[level])

    _option_change(command, new_report("rdp", details={"level": int(level)}), change, allow_rdp2=level == "2")


BOR_CHOICES = ("3", "2", "1", "off")  # f4load.registers.BOR_FIELD's keys


@cli.command("option-bytes", epilog=EXIT_CODES_HELP, short_help="Show or set BOR level and watchdog/reset bits.")
@click.option("--bor", "bor", type=click.Choice(BOR_CHOICES), default=None,
              help="Brown-out reset level: 3 (2.70 V), 2 (2.40 V), 1 (2.10 V) or off (RM0090 3.7.1).")
@click.option("--wdg", "wdg", type=click.Choice(["sw", "hw"]), default=None,
              help="sw: the IWDG runs only when software starts it; hw: it starts at every reset.")
@click.option("--nrst-stop", "nrst_stop", type=click.Choice(["0", "1"]), default=None,
              help="0: entering Stop mode resets the chip; 1: it does not.")
@click.option("--nrst-stdby", "nrst_stdby", type=click.Choice(["0", "1"]), default=None,
              help="0: entering Standby mode resets the chip; 1: it does not.")
@global_options
def option_bytes_command(bor: Optional[str], wdg: Optional[str], nrst_stop: Optional[str], nrst_stdby: Optional[str],
                         **options: Any) -> None:
    """Show the option bytes, or set the BOR level and the watchdog/reset bits. Protection has its own
    commands: protect, unprotect, rdp."""
    command = Command(options)
    report = new_report("option-bytes")

    def change(session: Session) -> Any:
        from f4load.registers import BOR_FIELD, FLASH_OPTCR_NRST_STDBY, FLASH_OPTCR_NRST_STOP, FLASH_OPTCR_WDG_SW

        assert session.info is not None
        if (bor, wdg, nrst_stop, nrst_stdby) == (None, None, None, None):
            report.text_lines = [line for line in report.info_lines()
                                 if line.startswith(("option bytes", "  "))]
            return None
        new = session.info.options
        if bor is not None:
            new = new.with_bor(BOR_FIELD[bor])
        if wdg is not None:
            new = new.with_bit(FLASH_OPTCR_WDG_SW, wdg == "sw")
        if nrst_stop is not None:
            new = new.with_bit(FLASH_OPTCR_NRST_STOP, nrst_stop == "1")
        if nrst_stdby is not None:
            new = new.with_bit(FLASH_OPTCR_NRST_STDBY, nrst_stdby == "1")
        return None if new == session.info.options else new

    _option_change(command, report, change)
