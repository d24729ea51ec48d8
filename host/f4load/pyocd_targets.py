"""f4load's RAM stub as pyocd's flash algorithm: target types `f4load_stm32f4{05,07,15,17}x{e,g}`.

pyocd runs a CMSIS flash algorithm in its own way (pyocd/flash/flash.py): it loads the blob with a BKPT
header into RAM, calls Init/EraseSector/ProgramPage/UnInit with r0-r2, LR at the BKPT and, for ProgramPage,
a page buffer it filled before. With two page buffers it double-buffers: it starts ProgramPage on one
buffer and fills the other over the link while the core programs (FlashBuilder._program_double_buffer).
This module gives pyocd our stub (the shipped FLM, host/f4load/stub/f4load_stub.FLM) in that form:

- `stub_flash_algo()`: the algo dict, made by pyocd's own `PackFlashAlgo.get_pyocd_flash_algo()` from the
  FLM, with two page buffers of `PAGE_SIZE` bytes at the top of SRAM.
- `F4LoadFlash`: pyocd's `Flash` plus what a generic CMSIS host cannot do - it writes the stub's config word
  (PSIZE from the probe's supply voltage) before Init; turns a non-zero result into pyocd's own
  FlashEraseFailure/FlashProgramFailure whose text says what FLASH_SR said, where (`f4load.errors.StubError`,
  read from the stub's error record); locks FLASH_CR after any failed call (pyocd calls no UnInit then);
  gives pyocd's smart flash its CRC analyzer (`compute_crcs`, zlib CRC-32 by the chip's CRC unit through the
  stub's ZlibCrc); and refuses an image that runs past the part's real flash (F_SIZE) before anything is
  erased (`F4LoadFlashBuilder`).
- `memory_map_for()` and the target classes: one flash region over the whole main flash with one
  subregion per run of equal sectors (RM0090 Table 5: 4 x 16 KB, 64 KB, 128 KB...), so pyocd loads the
  algorithm once and calls Init once per phase for the whole image; SRAM (SRAM1+SRAM2, 128 KB at
  0x2000_0000) is the default RAM; CCM (64 KB at 0x1000_0000, D-bus only, RM0090 2.3.1) is not default,
  so pyocd never puts code there.
- `register_targets()`: adds the target types to `pyocd.target.TARGET` (called by the f4sim probe plugin
  at load, or by a user script: examples/pyocd_user.py).

Page size: 16 KB. Under the stlink-v2 link model a 512 KB erase+program takes less time the larger the
page (fewer algorithm calls, each a dozen probe round trips of 1 ms), see docs/pyocd.md for the
measurement; 16 KB is the largest page the 16 KB sectors allow.
"""
from __future__ import annotations

import io
import logging
import math
from functools import cache
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

from pyocd.core import exceptions
from pyocd.core.memory_map import FlashRegion, MemoryMap, RamRegion
from pyocd.core.target import Target
from pyocd.coresight.coresight_target import CoreSightTarget
from pyocd.coresight.cortex_m import CortexM
from pyocd.flash.builder import FlashBuilder
from pyocd.flash.flash import Flash
from pyocd.target.pack.flash_algo import PackFlashAlgo
from pyocd.utility.timeout import Timeout

from f4load import protocol
from f4load.errors import StubError
from f4load.part import CCM_SIZE, CCM_START, F_SIZE, FLASH_START, KB, SRAM_SIZE, SRAM_START, Sector, sectors_for
from f4load.protocol import ErrorRecord
from f4load.registers import (
    DBGMCU_APB1_FZ,
    DBGMCU_APB1_FZ_DBG_IWDG_STOP,
    DBGMCU_APB1_FZ_DBG_WWDG_STOP,
    DBGMCU_CR,
    DHCSR,
    DHCSR_C_DEBUGEN,
    DHCSR_DBGKEY,
)
from f4load.stub_call import CALL_RETURNED, OFFSET_CALL_RESULT
from f4load.stub_image import StubImage, shipped_elf_bytes

LOG = logging.getLogger(__name__)

TARGET_PREFIX = "f4load_"
# The program page pyocd hands to ProgramPage, and the size of each of the two page buffers.
PAGE_SIZE = 16 * KB
PAGE_SIZES = (4 * KB, 8 * KB, 16 * KB)  # what docs/pyocd.md measured
# pyocd's FlashBuilder uses two buffers (current/next); PackFlashAlgo places exactly two when RAM allows.
PAGE_BUFFER_COUNT = 2
# PackFlashAlgo puts one 32-bit BKPT word before the blob (PackFlashAlgo._FLASH_BLOB_HEADER).
BLOB_HEADER_SIZE = 4
# One struct f4load_zlib_crc (address, size, crc32) per range handed to the stub's ZlibCrc.
ZLIB_CRC_RANGE_WORDS = 3

# pyocd's session option for trusting the analyzer's CRCs (FlashLoader's trust_crc, FlashBuilder's fast_verify).
TRUST_CRC_OPTION = "fast_program"

# DBGMCU bits not in f4load.registers (RM0090 38.16.2/38.16.3).
DBGMCU_CR_DBG_SLEEP = 1 << 0
DBGMCU_CR_DBG_STOP = 1 << 1
DBGMCU_CR_DBG_STANDBY = 1 << 2

# pyocd chooses between chip erase and sector erase by these weights (seconds); DS8626 Table 40 typical
# times at x32 (the digest's timing table), program weight per page at 16 us per 32-bit write.
ERASE_SECTOR_SECONDS = {16 * KB: 0.25, 64 * KB: 0.55, 128 * KB: 1.0}
MASS_ERASE_SECONDS = 8.0
PROGRAM_WRITE_SECONDS = 16e-6

# Parts and flash sizes: STM32F405/407/415/417, xE = 512 KB, xG = 1 MB (DS8626 ordering information).
PART_NAMES = ("STM32F405", "STM32F407", "STM32F415", "STM32F417")
FLASH_SIZE_LETTERS = {"e": 512 * KB, "g": 1024 * KB}


# --- the algorithm ------------------------------------------------------------------------------------------

@cache
def stub_image() -> StubImage:
    """The typed descriptor of the shipped stub (entry points, error record and config word offsets)."""
    return StubImage.shipped()


@cache
def _pack_algo() -> PackFlashAlgo:
    return PackFlashAlgo(io.BytesIO(shipped_elf_bytes()))


def sram_region() -> RamRegion:
    """SRAM1 + SRAM2, contiguous, where pyocd places the algorithm (the default RAM region)."""
    return RamRegion(name="sram", start=SRAM_START, length=SRAM_SIZE)


def stub_flash_algo(page_size: int = PAGE_SIZE, ram: Optional[RamRegion] = None,
                    pack_algo: Optional[PackFlashAlgo] = None) -> Dict[str, Any]:
    """pyocd's flash-algo dict for the stub, made by PackFlashAlgo from the FLM.

    Layout (PackFlashAlgo): [stack ... ][buffer 2][buffer 1][BKPT][stub] up to the end of `ram`.
    `pack_algo` is the FLM as pyocd loaded it (default: the shipped FLM).
    """
    algo = (pack_algo or _pack_algo()).get_pyocd_flash_algo(page_size, ram or sram_region())
    if len(algo["page_buffers"]) < PAGE_BUFFER_COUNT:
        raise exceptions.TargetSupportError(
            f"f4load: RAM too small for {PAGE_BUFFER_COUNT} page buffers of {page_size} bytes")
    # The stub programs any address, length and alignment (docs/stub.md, ProgramPage); the FLM's page size
    # is only pyocd's default for phrases.
    algo["min_program_length"] = 1
    return algo


# --- the Flash class ----------------------------------------------------------------------------------------

def probe_supply_voltage(probe: Any) -> Optional[float]:
    """VDD as the probe measures it, or None when the probe does not say.

    The f4sim probe has `target_voltage`; pyocd's ST-Link probe keeps its reading on the STLink object
    (`probe._link.target_voltage`, measured when the probe is opened). CMSIS-DAP probes report nothing.
    """
    for holder in (probe, getattr(probe, "_link", None)):
        if holder is None:
            continue
        try:
            value = getattr(holder, "target_voltage", None)
        except exceptions.Error:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


class F4LoadFlash(Flash):
    """pyocd's Flash running f4load's stub: config word before Init, typed results after every call.

    Everything else - loading, calling, double buffering, timeouts - is pyocd's own code.
    """

    #: Keep a running IWDG from resetting the chip during long erases (config word bit 16 clear).
    iwdg_keepalive: bool = True
    #: A PSIZE to use whatever the probe measures (protocol.PSIZE_X8/X16/X32), e.g. for a probe whose TVCC
    #: pin is not wired to the target's VDD; None: choose from the probe's reading.
    forced_psize: Optional[int] = None

    def __init__(self, target: Any, flash_algo: Dict[str, Any]) -> None:
        super().__init__(target, flash_algo)
        self.stub = stub_image()
        instructions = flash_algo["instructions"][BLOB_HEADER_SIZE // 4:]
        blob = b"".join(int(w).to_bytes(4, "little") for w in instructions)
        if not blob.startswith(self.stub.image):
            raise exceptions.TargetSupportError("f4load: the flash algorithm is not the shipped f4load stub")
        #: where the stub's blob starts in target RAM (symbol offsets are relative to this)
        self.blob_address = flash_algo["load_address"] + BLOB_HEADER_SIZE
        self._entry_of_pc = {self.blob_address + offset + 1: name
                             for name, offset in self.stub.entry.as_dict().items()}
        self._last_entry: Optional[str] = None
        self._last_r0: Optional[int] = None
        #: the config word written before the last Init (None until then), for logs and tests
        self.config_word: Optional[int] = None
        #: the last failure the stub reported (None if none)
        self.last_error: Optional[StubError] = None
        # pyocd's smart flash compares page CRCs when the flash offers an analyzer; ours is the stub's
        # ZlibCrc (compute_crcs), not pyocd's analyzer blob, so the algo dict keeps analyzer_supported False.
        self.use_analyzer = True
        self._locking = False  # inside lock_flash_cr(): a failing UnInit is reported there, not raised
        self._through_block = False  # the last call went through the stub's Call trampoline

    # --- the config word --------------------------------------------------------------------------------
    @property
    def config_address(self) -> int:
        return self.blob_address + self.stub.config_offset

    @property
    def error_record_address(self) -> int:
        return self.blob_address + self.stub.error_offset

    def supply_voltage(self) -> Optional[float]:
        return probe_supply_voltage(self.target.session.probe)

    def choose_config_word(self) -> int:
        """PSIZE from the probe's VDD reading (RM0090 Table 13), x32 when the probe reports none."""
        if self.forced_psize is not None:
            return protocol.config_word(self.forced_psize, iwdg=self.iwdg_keepalive)
        volts = self.supply_voltage()
        psize = protocol.PSIZE_X32
        if volts is not None:
            try:
                psize = protocol.psize_for_voltage(volts)
            except ValueError:
                # 0 V or nonsense: the probe's TVCC pin is not wired to VDD (the chip could not run
                # outside 1.8-3.6 V), so the reading says nothing about the supply.
                LOG.warning("f4load: probe reports VDD %.2f V, outside 1.8-3.6 V; assuming 2.7-3.6 V (x32)", volts)
        return protocol.config_word(psize, iwdg=self.iwdg_keepalive)

    # --- calls into the stub ----------------------------------------------------------------------------
    @property
    def call_block_address(self) -> int:
        return self.blob_address + self.stub.call_offset

    def _call_function(self, pc: int, r0: Optional[int] = None, r1: Optional[int] = None,
                       r2: Optional[int] = None, r3: Optional[int] = None, init: bool = False) -> None:
        """Call a stub entry point with its arguments in RAM (the stub's Call trampoline, f4load.stub_call):
        one block write - entry point, r0-r2, SP, and the return address at pyocd's BKPT - then PC (with xPSR.T
        on Init) and one DHCSR write to resume, where pyocd's own call writes pc, r0-r2, lr (and r9, sp, xPSR
        on Init) one register at a time and resumes in three round trips: 6 probe round trips instead of 19.
        The result comes back through the block too (`wait_for_completion`). A call the stub's entry points would
        not take (r3), or pyocd's algorithm debugging, goes pyocd's own way."""
        if init:
            # After the blob is loaded (which resets the word to its default) and before Init reads it.
            self.config_word = self.choose_config_word()
            self.target.write32(self.config_address, self.config_word)
        self._last_entry = self._entry_of_pc.get(pc)
        self._last_r0 = r0
        self._through_block = not (self._last_entry is None or r3 is not None or self.flash_algo_debug)
        if not self._through_block:
            super()._call_function(pc, r0, r1, r2, r3, init)
            return
        args = [0 if value is None else value for value in (r0, r1, r2)]
        block = [pc | 1, *args, self.begin_stack, self.flash_algo["load_address"] + 1, 0, 0]
        self.target.write_memory_block32(self.call_block_address, block)
        names, values = ["pc"], [self.blob_address + self.stub.entry.Call]
        if init:
            names, values = ["xpsr", "pc"], [CortexM.XPSR_THUMB, values[0]]
        self.target.write_core_registers_raw(names, values)
        # Resume: C_DEBUGEN with C_HALT clear (ARMv7-M C1.6.2); pyocd's resume() reads DHCSR and clears DFSR
        # first for its halt-reason bookkeeping, which the algorithm's calls do not use.
        self.target.write32(DHCSR, DHCSR_DBGKEY | DHCSR_C_DEBUGEN)

    def _wait_for_return(self, timeout: Optional[float]) -> int:
        """pyocd's wait for the BKPT (Flash.wait_for_completion: poll until halted, halt on a timeout, the stack
        canary), with the result read from the call block - one read where pyocd reads r0 in four - once Call
        has marked it returned."""
        if not self._through_block:
            return super().wait_for_completion(timeout)
        with Timeout(timeout) as time_out:
            while time_out.check():
                try:
                    if self.target.get_state() == Target.State.HALTED:
                        break
                except (exceptions.TransferTimeoutError, exceptions.TransferFaultError):
                    LOG.debug("target.get_state probe timeout or fault")
            else:
                self.target.halt()
                return self.TIMEOUT_ERROR
        if self.end_stack is not None and self.target.read32(self.end_stack) != self._STACK_CANARY:
            raise exceptions.FlashFailure(f"flash algorithm overflowed stack ({self.begin_stack - self.end_stack} "
                                          "bytes)")
        result, state = self.target.read_memory_block32(self.call_block_address + OFFSET_CALL_RESULT, 2)
        if state != CALL_RETURNED:
            pc = self.target.read_core_register("pc")
            raise exceptions.FlashFailure(f"the flash algorithm stopped at {pc:#010x}, not at its breakpoint")
        return int(result)

    def wait_for_completion(self, timeout: Optional[float] = None) -> int:
        """pyocd's wait, then: a non-zero stub result is raised here as pyocd's own exception type, after
        FLASH_CR is locked again.

        pyocd would raise the same type one level up with a bare number; raising it here lets the message
        carry what the stub found. Verify (which returns an address) is never called by pyocd. After any
        failure - a result code, pyocd's timeout (it halts the core and returns TIMEOUT_ERROR), a core that
        did not halt - pyocd raises without calling UnInit, which would leave FLASH_CR unlocked: so the
        stub's UnInit runs here first (`lock_flash_cr`).
        """
        if self._locking:
            return self._wait_for_return(timeout)
        try:
            result = self._wait_for_return(timeout)
        except exceptions.Error:
            self._after_failure()
            raise
        if result == self.TIMEOUT_ERROR:
            self._after_failure()
        elif result != 0 and self._last_entry not in (None, "Verify"):
            # Only the stub's own entry points return result codes.
            failure = self._failure(result)
            self._after_failure()
            raise failure
        return result

    @property
    def is_initialized(self) -> bool:
        """pyocd has called Init and not yet UnInit (FLASH_CR unlocked unless Init was for VERIFY)."""
        return self._active_operation is not None

    def _after_failure(self) -> None:
        if self._last_entry == "UnInit":
            # UnInit itself failed: BSY stayed set, and it already declined to write CR. Calling it again
            # would only wait as long once more; the failure says to reset the chip.
            self._active_operation = None
        else:
            self.lock_flash_cr()

    def lock_flash_cr(self) -> bool:
        """Run the stub's UnInit now: it waits for BSY to clear, then locks FLASH_CR (and gives back the
        caches and PRIMASK Init found). True when CR is locked.

        Called after a failure and when the session disconnects with the algorithm still initialised. The
        core may have been stopped anywhere (a timeout, an interrupted session): it is halted, and SP and xPSR
        are set as for a fresh call. UnInit writes CR only once BSY is clear (RM0090 3.6: a CR write while
        BSY is set stalls the bus until the operation ends); if BSY stays set past the stub's longest erase
        timeout, CR stays unlocked and the warning says to reset the chip. pyocd then treats the algorithm as
        not initialised, so a retry calls Init again.
        """
        if self._active_operation is None and self._last_entry is None:
            return True  # nothing was ever called: the stub has not unlocked anything
        self._locking = True
        try:
            self.target.halt()
            self.target.write_core_registers_raw(["sp", "xpsr"], [self.begin_stack, CortexM.XPSR_THUMB])
            operation = self._active_operation or self.Operation.ERASE
            result = self._call_function_and_wait(self.flash_algo["pc_unInit"], r0=operation.value,
                                                  timeout=self.target.session.options.get("flash.timeout.init"))
        except exceptions.Error as error:
            LOG.warning("f4load: could not lock FLASH_CR after the failure (%s); reset the chip", error)
            return False
        finally:
            self._locking = False
            self._active_operation = None
        if result == 0:
            LOG.debug("f4load: FLASH_CR locked after the failure (UnInit)")
            return True
        if result == self.TIMEOUT_ERROR:
            why = "UnInit did not return"
        else:
            why = str(StubError(result, self.read_error_record()))
        LOG.warning("f4load: FLASH_CR left unlocked: %s; reset the chip", why)
        return False

    # --- pyocd's CRC analyzer -----------------------------------------------------------------------------
    def compute_crcs(self, sectors: Sequence[Tuple[int, int]]) -> List[int]:
        """zlib's CRC-32 of each (address, size) range of flash, as pyocd's smart flash compares them
        (FlashBuilder._analyze_pages_with_crc32), computed by the chip's CRC unit (the stub's ZlibCrc).

        Any size; addresses must be multiples of 4 (pyocd asks for whole pages). The ranges go into the
        first page buffer, as many per call as it holds; the algorithm must be initialised (pyocd inits it
        for VERIFY first, which leaves FLASH_CR locked).
        """
        ranges = list(sectors)
        per_call = self.region.page_size // (4 * ZLIB_CRC_RANGE_WORDS)
        entry = self.blob_address + self.stub.entry.ZlibCrc + 1  # Thumb
        buffer = self.page_buffers[0]
        crcs: List[int] = []
        for first in range(0, len(ranges), per_call):
            batch = ranges[first:first + per_call]
            self.target.write_memory_block32(buffer, [word for address, size in batch for word in (address, size, 0)])
            result = self._call_function_and_wait(entry, r0=buffer, r1=len(batch),
                                                  timeout=self.target.session.options.get("flash.timeout.analyzer"))
            if result == self.TIMEOUT_ERROR:
                raise exceptions.FlashFailure("f4load: the CRC of flash pages (ZlibCrc) timed out")
            words = self.target.read_memory_block32(buffer, len(batch) * ZLIB_CRC_RANGE_WORDS)
            crcs.extend(words[ZLIB_CRC_RANGE_WORDS - 1::ZLIB_CRC_RANGE_WORDS])
        return crcs

    # --- the image against the part -----------------------------------------------------------------------
    def part_flash_size(self) -> Optional[int]:
        """Bytes of main flash this part has, from F_SIZE (0x1FFF_7A22, RM0090 39.2); None when F_SIZE names
        no size of this family (the stub's Init reports that as BAD_FLASH_SIZE)."""
        size = self.target.read16(F_SIZE) * KB
        return size if size in FLASH_SIZE_LETTERS.values() else None

    def get_flash_builder(self) -> FlashBuilder:
        return F4LoadFlashBuilder(self)

    def read_error_record(self) -> Optional[ErrorRecord]:
        try:
            data = bytes(self.target.read_memory_block8(self.error_record_address, ErrorRecord.SIZE))
        except exceptions.TransferError as error:
            LOG.debug("f4load: could not read the stub's error record: %s", error)
            return None
        return ErrorRecord.from_bytes(data)

    def _failure(self, code: int) -> exceptions.FlashFailure:
        record = self.read_error_record()
        if record is not None and record.result != code:
            record = None  # not this failure's record
        requested = self._last_r0 if self._last_entry in ("EraseSector", "ProgramPage") else None
        error = StubError(code, record, address=requested)
        self.last_error = error
        kind: Type[exceptions.FlashFailure] = exceptions.FlashFailure
        if error.is_erase:
            kind = exceptions.FlashEraseFailure
        elif error.is_program:
            kind = exceptions.FlashProgramFailure
        failure = kind(str(error), address=error.address, result_code=code)
        failure.__cause__ = error
        return failure


class F4LoadFlashBuilder(FlashBuilder):
    """pyocd's FlashBuilder that checks every chunk of the image against the part's real flash size first.

    A target type names a flash size (xE 512 KB, xG 1 MB), but the part on the board may be smaller: without
    this check pyocd would find out only when it reads past the end for smart flash ("Memory transfer fault
    (read: no memory at 0x08080000)"), or, without smart flash, after erasing.
    """

    _part_size: Optional[int] = None  # F_SIZE in bytes, read once per builder (pyocd adds a HEX file's
    # segments one call each)

    def add_data(self, addr: int, data: Any) -> None:
        flash = self.flash
        if len(data) and isinstance(flash, F4LoadFlash):
            if self._part_size is None:
                self._part_size = flash.part_flash_size()
            size = self._part_size
            if size is not None and addr + len(data) > FLASH_START + size:
                raise exceptions.FlashFailure(too_large_message(addr, len(data), size, flash.target))
        super().add_data(addr, data)


def too_large_message(addr: int, length: int, part_size: int, target: Any) -> str:
    """One line: which addresses do not exist on this part, its size from F_SIZE, and what to do."""
    end = FLASH_START + part_size
    first_missing = max(addr, end)
    part_name = getattr(target, "PART_NUMBER", "STM32F407xx")[:-2]
    text = (f"the image reaches 0x{first_missing:08X}-0x{addr + length - 1:08X}, past the end of this part's "
            f"flash: F_SIZE (0x{F_SIZE:08X}) says {part_size // KB} KB (0x{FLASH_START:08X}-0x{end - 1:08X}); "
            f"nothing was erased")
    largest = max(FLASH_SIZE_LETTERS.values())
    if addr + length <= FLASH_START + largest and part_size < largest:
        return (f"{text}. Link the image to fit {part_size // KB} KB, or program it into a 1 MB part "
                f"({part_name}xG, target type {target_name(part_name, largest)})")
    return f"{text}. Link the image to fit {part_size // KB} KB"


# --- the memory map ----------------------------------------------------------------------------------------

def _runs_of_equal_sectors(sectors: List[Sector]) -> List[List[Sector]]:
    runs: List[List[Sector]] = []
    for sector in sectors:
        if runs and runs[-1][-1].size == sector.size:
            runs[-1].append(sector)
        else:
            runs.append([sector])
    return runs


def memory_map_for(flash_size: int, algo: Dict[str, Any], page_size: int = PAGE_SIZE,
                   flash_class: Type[Flash] = F4LoadFlash) -> MemoryMap:
    """Main flash as one region (one algorithm load, one Init per phase) with a subregion per sector size,
    SRAM as the default RAM, CCM as non-default data RAM (not executable: the core cannot fetch from it)."""
    flash = FlashRegion(name="flash", start=FLASH_START, length=flash_size, blocksize=128 * KB,
                        page_size=page_size, is_boot_memory=True, algo=algo, flash_class=flash_class,
                        erase_all_weight=MASS_ERASE_SECONDS,
                        program_page_weight=page_size // 4 * PROGRAM_WRITE_SECONDS)
    add_sector_subregions(flash, page_size)
    ccm = RamRegion(name="ccm", start=CCM_START, length=CCM_SIZE, access="rw", is_default=False)
    return MemoryMap(flash, sram_region(), ccm)


def add_sector_subregions(flash: FlashRegion, page_size: int = PAGE_SIZE) -> None:
    """One subregion of `flash` per run of equal sectors (RM0090 Table 5), so that pyocd's sector and page
    lookups (Flash.get_sector_info/get_page_info) see the F4's 16/64/128 KB sectors.

    pyocd's Target clones the memory map it is given, and a cloned region loses its subregions: a target
    calls this again on its own copy (F4LoadSTM32F4.__init__)."""
    for subregion in list(flash.submap.regions):
        flash.submap.remove_region(subregion)
    for run in _runs_of_equal_sectors(sectors_for(flash.length)):
        size = run[0].size
        flash.submap.add_region(FlashRegion(
            name=f"{flash.name}_{size // KB}k", start=run[0].start, length=size * len(run), blocksize=size,
            page_size=min(page_size, size), algo=flash.algo, flash_class=flash.flash_class,
            erase_sector_weight=ERASE_SECTOR_SECONDS[size],
            program_page_weight=min(page_size, size) // 4 * PROGRAM_WRITE_SECONDS))


# --- the targets -------------------------------------------------------------------------------------------

class F4LoadSTM32F4(CoreSightTarget):
    """An STM32F405/407/415/417 with f4load's flash algorithm; subclasses fix the part and flash size."""

    VENDOR = "STMicroelectronics"
    PART_FAMILIES = ["STM32F4 Series", "STM32F407/417"]
    PART_NUMBER = "STM32F407xG"
    FLASH_SIZE = 1024 * KB
    #: the pyocd Flash class of the main flash region (a subclass can change PAGE or the IWDG policy)
    FLASH_CLASS: Type[Flash] = F4LoadFlash
    PAGE_SIZE = PAGE_SIZE

    def __init__(self, session: Any) -> None:
        algo = stub_flash_algo(self.PAGE_SIZE)
        super().__init__(session, memory_map_for(self.FLASH_SIZE, algo, self.PAGE_SIZE, self.FLASH_CLASS))
        add_sector_subregions(self.memory_map.get_boot_memory(), self.PAGE_SIZE)
        # Trust the page CRCs (pyocd's `fast_program`, FlashBuilder's fast_verify) unless the user says
        # otherwise: they come from the chip's CRC unit over the flash itself, as f4load's own skip and verify
        # do. pyocd's default (False) reads every page whose CRC matches back over SWD to confirm it, which
        # costs as much as programming nothing saves. A layer at the back: any user setting wins.
        session.options.add_back({TRUST_CRC_OPTION: True})

    def post_connect_hook(self) -> None:
        """Keep debug alive in low-power modes and stop the watchdogs while the core is halted
        (RM0090 38.16.2-3). While the stub runs the IWDG counts anyway; the stub services it. Then warn when
        the part's flash (F_SIZE) is not the size this target type maps."""
        self.write32(DBGMCU_CR, DBGMCU_CR_DBG_SLEEP | DBGMCU_CR_DBG_STOP | DBGMCU_CR_DBG_STANDBY)
        self.write32(DBGMCU_APB1_FZ, self.read32(DBGMCU_APB1_FZ) | DBGMCU_APB1_FZ_DBG_IWDG_STOP
                     | DBGMCU_APB1_FZ_DBG_WWDG_STOP)
        part_kb = self.read16(F_SIZE)
        if part_kb * KB != self.FLASH_SIZE and part_kb * KB in FLASH_SIZE_LETTERS.values():
            right = target_name(self.PART_NUMBER[:-2], part_kb * KB)
            LOG.warning("f4load: this part has %d KB of flash (F_SIZE), target type %s maps %d KB: use %s",
                        part_kb, target_name(self.PART_NUMBER[:-2], self.FLASH_SIZE), self.FLASH_SIZE // KB,
                        right)

    def disconnect(self, resume: bool = True) -> None:
        """Lock FLASH_CR if the flash algorithm is still initialised (the session ends after a failure or an
        interruption between two calls), then disconnect as pyocd does."""
        flash = getattr(self.session.context_state, "current_flash_algo", None)
        if isinstance(flash, F4LoadFlash) and flash.target is self and flash.is_initialized:
            flash.lock_flash_cr()
        super().disconnect(resume)


def target_name(part_name: str, flash_size: int) -> str:
    """`f4load_stm32f407xg` for ("STM32F407", 1 MB)."""
    letter = {size: letter for letter, size in FLASH_SIZE_LETTERS.items()}[flash_size]
    return f"{TARGET_PREFIX}{part_name.lower()}x{letter}"


def _make_target(part_name: str, letter: str) -> Type[F4LoadSTM32F4]:
    flash_size = FLASH_SIZE_LETTERS[letter]
    cls_name = f"F4Load_{part_name}x{letter.upper()}"
    return type(cls_name, (F4LoadSTM32F4,), {
        "PART_NUMBER": f"{part_name}x{letter.upper()}", "FLASH_SIZE": flash_size,
        "__doc__": f"{part_name}x{letter.upper()} ({flash_size // KB} KB flash) with f4load's flash algorithm.",
    })


#: target type name -> class, e.g. TARGETS["f4load_stm32f407xg"]
TARGETS: Dict[str, Type[F4LoadSTM32F4]] = {
    target_name(part_name, FLASH_SIZE_LETTERS[letter]): _make_target(part_name, letter)
    for part_name in PART_NAMES for letter in FLASH_SIZE_LETTERS
}


def register_targets() -> None:
    """Add f4load's target types to pyocd (`pyocd.target.TARGET`). Idempotent; cheap (nothing is loaded
    until a target is created), so a probe plugin's `load()` or a user script may call it."""
    from pyocd.target import TARGET

    TARGET.update(TARGETS)
