"""The flash commands: program, erase, verify, read."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import click

from f4load.cli.group import (
    EXIT_CODES_HELP,
    NUMBER,
    PSIZE_HELP,
    Command,
    cli,
    file_loader,
    global_options,
    image_options,
    new_report,
    progress_bar,
    sector_indexes,
)

if TYPE_CHECKING:
    from f4load.session import Session


@cli.command(epilog=EXIT_CODES_HELP)
@image_options
@click.option("--keep/--no-keep", "keep", default=True,
              help="Preserve the bytes of touched sectors that lie outside the image (default), or let them end "
                   "up erased (0xFF) with --no-keep.")
@click.option("--verify/--no-verify", "verify", default=True,
              help="Verify every rewritten sector by CRC on the target (default). With --no-verify each written "
                   "word is still read back by the stub.")
@click.option("--keep-backup", "keep_backup", is_flag=True,
              help="Keep the backup file of the bytes kept around the image (written before their sector's erase, "
                   "normally removed after a successful verify).")
@click.option("--psize", "psize", type=click.Choice(["x8", "x16", "x32"]), default=None, help=PSIZE_HELP)
@global_options
def program(files: Sequence[str], address: Optional[int], file_format: Optional[str], keep: bool, verify: bool,
            keep_backup: bool, psize: Optional[str], **options: Any) -> None:
    """Program FILE... (.bin, .hex, .srec, .elf) into flash.

    Several files are programmed in one run: `f4load boot.hex app.bin@0x08008000` (a raw binary takes its
    address after @; two files that place bytes at the same address are an error, found before anything is
    erased). Only sectors whose contents change are erased and rewritten; sectors that already hold their new
    contents are skipped, blank ones are programmed without an erase. The bytes kept around the image in a
    sector to be erased are first saved to a backup file (Intel HEX, in the user cache directory or
    $F4LOAD_BACKUP_DIR); if the work fails, the error names it and `f4load BACKUP.hex` restores them.
    """
    command = Command(options)
    command.keep_backup = keep_backup
    command.psize = psize
    report = new_report("program", file=" ".join(files), files=list(files))

    def work(session: Session) -> None:
        bar = progress_bar(command, session)

        def before_work(plan: Any) -> None:
            if command.settings.verbose and not command.settings.as_json:
                click.echo(plan.describe(), err=True)
            bar.begin(plan.bytes_erased + plan.bytes_programmed, "erase+program" if plan.bytes_erased else "program")

        assert report.image is not None
        try:
            report.outcome = session.program(report.image, keep=keep, verify=verify, progress=bar,
                                             before_work=before_work)
        finally:
            bar.end()

    command.run(report, work, before=file_loader(report, files, file_format, address))


@cli.command(epilog=EXIT_CODES_HELP, short_help="Erase sectors (0-3,5) or the whole flash (--chip).")
@click.argument("sectors", required=False)
@click.option("--chip", "chip", is_flag=True, help="Erase every sector of the part (one mass erase where that is "
              "faster: on a 1 MB part; sector by sector on a 512 KB part).")
@click.option("--force", "force", is_flag=True, help="Erase sectors that are already blank too.")
@click.option("--psize", "psize", type=click.Choice(["x8", "x16", "x32"]), default=None, help=PSIZE_HELP)
@global_options
def erase(sectors: Optional[str], chip: bool, force: bool, psize: Optional[str], **options: Any) -> None:
    """Erase SECTORS (e.g. 0-3,5) or, with --chip, the whole flash.

    Sectors already blank are skipped (one CRC tells) unless --force. --chip uses one mass erase where that is
    faster, on a 1 MB part (8 s against 8.55 s typical at x32, DS8626 Table 40); on a 512 KB part the sector
    erases are faster (4.55 s against 8 s) and show progress.
    """
    command = Command(options)
    command.psize = psize
    if chip == bool(sectors):
        raise click.UsageError("give either SECTORS (e.g. 0-3,5) or --chip")
    indexes = sector_indexes(sectors) if sectors else []
    report = new_report("erase")

    def work(session: Session) -> None:
        assert session.info is not None
        chosen = list(range(len(session.info.part.sectors))) if chip else indexes
        bar = progress_bar(command, session)
        try:
            report.outcome = session.erase(chosen, force=force, progress=bar,
                                           before_work=lambda todo: bar.begin(sum(s.size for s in todo), "erase"))
        finally:
            bar.end()

    command.run(report, work)


@cli.command(epilog=EXIT_CODES_HELP, short_help="Check that the flash holds FILE... (by CRC on the target).")
@image_options
@global_options
def verify(files: Sequence[str], address: Optional[int], file_format: Optional[str], **options: Any) -> None:
    """Check that the flash holds FILE... (a CRC on the target per sector, no data read back)."""
    command = Command(options)
    report = new_report("verify", file=" ".join(files), files=list(files))

    def work(session: Session) -> None:
        assert report.image is not None
        report.outcome = session.verify(report.image)

    command.run(report, work, before=file_loader(report, files, file_format, address))


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("address", type=NUMBER)
@click.argument("length", type=NUMBER)
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@global_options
def read(address: int, length: int, out: str, **options: Any) -> None:
    """Read LENGTH bytes at ADDRESS into the file OUT (`-` for stdout). Numbers take 0x.. and a K/M suffix."""
    command = Command(options)
    command.several_boards_need = "read writes one file; run it once per probe"
    if out == "-" and command.settings.as_json:
        raise click.UsageError("--json prints on stdout: give OUT a file name")
    if length == 0:
        raise click.BadParameter("must be at least 1", param_hint="LENGTH")
    report = new_report("read", details={"address": address, "length": length, "out": out})

    def work(session: Session) -> None:
        from f4load.errors import UsageError
        from f4load.part import FLASH_START

        assert session.info is not None
        if address < session.info.part.flash_end and address + length > FLASH_START:
            session.check_not_read_protected()
        if address + length > 1 << 32:
            raise UsageError(f"{length} bytes at {address:#010x} run past the end of the address space")
        data = session.read(address, length)
        if out == "-":
            command.console.binary(data)
        else:
            try:
                with open(out, "wb") as handle:
                    handle.write(data)
            except OSError as error:
                raise UsageError(f"{out}: cannot write: {error.strerror or error}") from None

    command.run(report, work)
