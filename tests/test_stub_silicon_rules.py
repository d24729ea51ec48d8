"""The stub obeys the silicon's rules even where the happy path would not notice: timeouts sized for the clock
the chip really runs, no writes through a queue pointer it has not checked, no write over flash that is not
erased, an IWDG update only when the watchdog can take it, and the application's PRIMASK and caches given back.

Each test runs the shipped stub alone on a bare virtual STM32F407 (no pyocd, no host driver) and calls its
entry points the way a debugger does: arguments in r0-r2, LR at a BKPT word, PC at the entry point.
"""
from __future__ import annotations

import struct

from f4load import protocol, registers
from f4load.sim.armv7m import REGSEL_LR, REGSEL_PC, REGSEL_SP, REGSEL_SPECIAL, REGSEL_XPSR
from f4load.sim.chip import Chip
from f4load.sim.clock import PS_PER_S
from f4load.sim.faults import parse_fault_spec
from f4load.stub_image import StubImage

STUB = StubImage.shipped()
FLASH_START = 0x0800_0000
SECTOR_1 = 0x0800_4000  # 16 KB
SECTOR_5 = 0x0802_0000  # 128 KB
c = protocol.const

# RM0090 7.3.3 RCC_CFGR: SW (1:0) selects SYSCLK, SWS (3:2) shows the switch; 0b10 = PLL.
RCC_CFGR_SW_PLL = 0b10
# RM0090 3.8.1 FLASH_ACR: the instruction and data cache enables.
FLASH_ACR_ICEN, FLASH_ACR_DCEN = 1 << 9, 1 << 10
# RM0090 19.4.2-19.4.3: IWDG_PR and IWDG_RLR.
IWDG_PR, IWDG_RLR = registers.IWDG_BASE + 0x04, registers.IWDG_BASE + 0x08


class BareStub:
    """The stub loaded at its usual RAM layout on a halted virtual chip with a debugger attached."""

    def __init__(self, faults: str = "") -> None:
        self.chip = chip = Chip(parse_fault_spec(faults))
        chip.power_on()
        chip.debugen = True
        chip.halt(0)
        self.layout = STUB.layout()
        self.write32(self.layout.halt_address, c("F4LOAD_HALT_WORD"))
        chip.bus_write_block(self.layout.load_address, STUB.image)

    def read32(self, address: int) -> int:
        return int.from_bytes(self.chip.bus_read_block(address, 4), "little")

    def write32(self, address: int, value: int) -> None:
        self.chip.bus_write_block(address, value.to_bytes(4, "little"))

    def call(self, name: str, *args: int, limit_s: float = 1.0) -> int:
        chip = self.chip
        for regsel, value in enumerate(args):
            chip.write_core_register(regsel, value)
        chip.write_core_register(REGSEL_SP, self.layout.stack_top)
        chip.write_core_register(REGSEL_LR, self.layout.halt_address | 1)
        chip.write_core_register(REGSEL_XPSR, 1 << 24)
        chip.write_core_register(REGSEL_PC, STUB.entry_address(self.layout.load_address, name))
        chip.resume()
        assert chip.run_until_halted(int(limit_s * PS_PER_S)), f"{name} did not return"
        assert chip.read_core_register(REGSEL_PC) == self.layout.halt_address
        return chip.read_core_register(0)

    def init(self, fnc: int = c("F4LOAD_FNC_PROGRAM"), psize: int = protocol.PSIZE_X32) -> None:
        self.write32(self.layout.load_address + STUB.config_offset, protocol.config_word(psize))
        assert self.call("Init", FLASH_START, 0, fnc) == 0  # clk 0: unknown, as pyocd passes it

    def record(self) -> protocol.ErrorRecord:
        address = self.layout.load_address + STUB.error_offset
        return protocol.ErrorRecord.from_bytes(self.chip.bus_read_block(address, protocol.ErrorRecord.SIZE))

    def program(self, address: int, data: bytes) -> int:
        buffer = self.layout.buffers[0]
        self.chip.bus_write_block(buffer, data)
        return self.call("ProgramPage", address, len(data), buffer)

    @property
    def primask(self) -> int:
        return self.chip.read_core_register(REGSEL_SPECIAL) & 1

    @primask.setter
    def primask(self, value: int) -> None:
        special = self.chip.read_core_register(REGSEL_SPECIAL)
        self.chip.write_core_register(REGSEL_SPECIAL, (special & ~1) | value)


def _now_s(stub: BareStub) -> float:
    return stub.chip.clock.now_ps / PS_PER_S


# --- timeouts follow the clock the application set up -------------------------------------------------------

def test_attached_to_an_application_on_the_pll_a_128k_erase_does_not_time_out():
    """pyocd passes clk = 0; the application runs SYSCLK from the PLL (168 MHz on silicon). Assuming HSI would
    make the 128 KB erase time out after 0.38 s of real time; the stub reads SWS and assumes 168 MHz."""
    stub = BareStub()
    stub.write32(registers.RCC_CFGR, RCC_CFGR_SW_PLL)  # the virtual chip mirrors SW into SWS
    stub.chip.load(SECTOR_5, b"\x00" * 64)
    stub.init(fnc=c("F4LOAD_FNC_ERASE"))
    assert stub.call("EraseSector", SECTOR_5, limit_s=60) == 0
    assert stub.chip.bus_read_block(SECTOR_5, 64) == b"\xff" * 64


def test_on_the_pll_a_stuck_erase_is_given_the_168mhz_timeout():
    """The virtual core runs at 16 MHz whatever SW says, so a timeout counted in 168 MHz cycles lasts 10.5
    times longer: with BSY stuck, a 16 KB erase (x32: 2 x 500 ms) gives up after about 10.5 s, not 1 s."""
    stub = BareStub("bsy-stuck")
    stub.write32(registers.RCC_CFGR, RCC_CFGR_SW_PLL)
    stub.init(fnc=c("F4LOAD_FNC_ERASE"))
    start = _now_s(stub)
    result = protocol.ResultCode.decode(stub.call("EraseSector", SECTOR_1, limit_s=60))
    elapsed = _now_s(stub) - start
    assert (result.kind, result.sector) == (c("F4LOAD_KIND_BSY_TIMEOUT"), 1)
    assert 10.0 < elapsed < 12.0
    assert 1000 <= stub.record().waited_ms <= 1000 * 17 // 16  # the sim's poll skipping lands up to 1/16 late


def test_on_hsi_a_stuck_erase_is_given_the_16mhz_timeout():
    stub = BareStub("bsy-stuck")
    stub.init(fnc=c("F4LOAD_FNC_ERASE"))
    start = _now_s(stub)
    result = protocol.ResultCode.decode(stub.call("EraseSector", SECTOR_1, limit_s=60))
    assert result.kind == c("F4LOAD_KIND_BSY_TIMEOUT")
    assert 0.9 < _now_s(stub) - start < 1.2


# --- Stream writes nothing through a queue pointer it has not checked ---------------------------------------

def test_stream_before_init_returns_at_once_and_leaves_the_queue_untouched():
    stub = BareStub()
    queue = stub.layout.queue_address
    before = bytes(range(256)) * 4  # no magic, but status and error words would be overwritten
    stub.chip.bus_write_block(queue, before)
    result = protocol.ResultCode.decode(stub.call("Stream", queue, stub.layout.buffers[0], 1))
    assert (result.kind, result.op) == (c("F4LOAD_KIND_NOT_INITIALIZED"), c("F4LOAD_OP_STREAM"))
    assert stub.chip.bus_read_block(queue, len(before)) == before


def test_stream_on_memory_without_the_queue_magic_leaves_it_untouched():
    stub = BareStub()
    stub.init()
    not_a_queue = stub.layout.buffers[3]
    before = bytes(range(256)) * 4
    stub.chip.bus_write_block(not_a_queue, before)
    code = stub.call("Stream", not_a_queue, stub.layout.buffers[0], 1)
    result = protocol.ResultCode.decode(code)
    assert (result.kind, result.op, result.detail) == (
        c("F4LOAD_KIND_BAD_ARGUMENT"), c("F4LOAD_OP_STREAM"), c("F4LOAD_ARG_BAD_QUEUE"))
    assert stub.chip.bus_read_block(not_a_queue, len(before)) == before
    assert (stub.record().result, stub.record().address) == (code, not_a_queue)  # the stub's own record says it


# --- only erased locations are programmed ------------------------------------------------------------------

def test_a_word_that_needs_a_1_where_the_flash_has_a_0_is_refused_before_it_is_written():
    """x32, word-aligned, over flash that holds data (so not the erased-flash loop: each word is checked).
    Writing 0xF0F0F0F0 over 0x0F0F0F0F would leave 0x00000000 and destroy what was there; the stub refuses
    and the flash keeps its contents."""
    stub = BareStub()
    stub.chip.load(SECTOR_1 + 8, struct.pack("<I", 0x0F0F_0F0F))
    stub.init()
    data = b"\x11" * 8 + struct.pack("<I", 0xF0F0_F0F0) + b"\x22" * 4
    result = protocol.ResultCode.decode(stub.program(SECTOR_1, data))
    assert (result.kind, result.op, result.sector, result.detail) == (
        c("F4LOAD_KIND_VERIFY_MISMATCH"), c("F4LOAD_OP_PROGRAM"), 1, c("F4LOAD_VERIFY_NOT_ERASED"))
    record = stub.record()
    assert (record.address, record.expected, record.actual) == (SECTOR_1 + 8, 0xF0F0_F0F0, 0x0F0F_0F0F)
    assert stub.chip.bus_read_block(SECTOR_1, 16) == b"\x11" * 8 + struct.pack("<I", 0x0F0F_0F0F) + b"\xff" * 4


def test_an_unaligned_x8_write_over_unerased_flash_is_refused_before_it_is_written():
    stub = BareStub()
    stub.chip.load(SECTOR_1 + 3, b"\x5a")
    stub.init(psize=protocol.PSIZE_X8)
    result = protocol.ResultCode.decode(stub.program(SECTOR_1 + 1, b"\x00\x00\xa5\x00"))
    assert (result.kind, result.detail) == (c("F4LOAD_KIND_VERIFY_MISMATCH"), c("F4LOAD_VERIFY_NOT_ERASED"))
    assert (stub.record().address, stub.record().expected, stub.record().actual) == (SECTOR_1 + 3, 0xA5, 0x5A)
    assert stub.chip.bus_read_block(SECTOR_1, 6) == b"\xff\x00\x00\x5a\xff\xff"


def test_programming_data_the_flash_already_holds_succeeds_without_a_write():
    stub = BareStub()
    data = bytes(range(64))
    stub.chip.load(SECTOR_1, data)
    stub.init()
    assert stub.program(SECTOR_1, data) == 0
    assert stub.chip.bus_read_block(SECTOR_1, 64) == data


def test_clearing_more_bits_of_a_programmed_word_is_still_allowed():
    """Only a needed 1 bit makes a location unprogrammable; turning further 1s into 0s is a normal write."""
    stub = BareStub()
    stub.chip.load(SECTOR_1, struct.pack("<I", 0xFFFF_00FF))
    stub.init()
    assert stub.program(SECTOR_1, struct.pack("<I", 0x0F0F_000F)) == 0
    assert stub.read32(SECTOR_1) == 0x0F0F_000F


def test_a_range_programmed_after_the_stubs_own_erase_is_no_longer_taken_for_erased():
    """After EraseSector the stub knows the sector is erased and programs it without looking first; once a range
    is programmed, that knowledge ends there: programming it again with data that needs a 1 is refused."""
    stub = BareStub()
    stub.chip.load(SECTOR_1, b"\x00" * 64)
    stub.init()
    assert stub.call("EraseSector", SECTOR_1) == 0
    first = bytes(range(1, 65))
    assert stub.program(SECTOR_1, first) == 0
    result = protocol.ResultCode.decode(stub.program(SECTOR_1, first[:4] + b"\xfe" * 4))
    assert (result.kind, result.detail) == (c("F4LOAD_KIND_VERIFY_MISMATCH"), c("F4LOAD_VERIFY_NOT_ERASED"))
    assert stub.record().address == SECTOR_1 + 4
    assert stub.chip.bus_read_block(SECTOR_1, 64) == first
    assert stub.program(SECTOR_1 + 64, b"\x5a" * 64) == 0  # the rest of the sector is still erased
    assert stub.chip.bus_read_block(SECTOR_1 + 64, 68) == b"\x5a" * 64 + b"\xff" * 4


def test_a_write_the_flash_refuses_in_the_erased_flash_loop_names_that_word():
    """A blank write-protected sector: the stub sees erased flash and takes its fast loop; the first word it
    really writes (the leading 0xFF words need no write) fails with WRPERR, and the record names that word."""
    stub = BareStub("wrp=1")
    stub.chip.apply_option_faults()
    stub.init()
    result = protocol.ResultCode.decode(stub.program(SECTOR_1, b"\xff" * 8 + b"\x12\x34\x56\x78" * 4))
    assert (result.kind, result.op, result.sector) == (
        c("F4LOAD_KIND_FLASH_ERROR"), c("F4LOAD_OP_PROGRAM"), 1)
    assert result.sr_bits & registers.FLASH_SR_WRPERR
    assert stub.record().address == SECTOR_1 + 8
    assert stub.chip.bus_read_block(SECTOR_1, 24) == b"\xff" * 24


def test_a_program_write_whose_bsy_never_clears_times_out_naming_the_word():
    """The erased-flash loop polls BSY a bounded number of times, then the timed 1 ms wait decides."""
    stub = BareStub("bsy-stuck")
    stub.init()
    result = protocol.ResultCode.decode(stub.program(SECTOR_1 + 16, b"\x12\x34\x56\x78" * 4))
    assert (result.kind, result.op, result.sector) == (c("F4LOAD_KIND_BSY_TIMEOUT"), c("F4LOAD_OP_PROGRAM"), 1)
    assert stub.record().address == SECTOR_1 + 16
    assert stub.record().waited_ms >= c("F4LOAD_PROGRAM_TIMEOUT_MS")


# --- the IWDG takes the stretch even right after the application updated it ---------------------------------

def test_watchdog_stretch_waits_for_an_update_the_application_left_in_flight():
    """The application wrote PR just before the debugger halted it: PVU is still 1, and a PR/RLR write then is
    ignored (RM0090 19.4.4). The stub waits for PVU = 0 first, so its /256 and 0xFFF land."""
    stub = BareStub("iwdg=50ms")
    stub.write32(registers.IWDG_KR, registers.IWDG_KEY_ACCESS)
    stub.write32(IWDG_PR, 3)
    assert stub.read32(registers.IWDG_SR) & 1  # PVU: the application's update is crossing into the LSI domain
    stub.init()
    assert (stub.read32(IWDG_PR), stub.read32(IWDG_RLR)) == (6, 0xFFF)
    assert not stub.chip.resets.get("iwdg")


# --- UnInit gives the application back what Init took -----------------------------------------------------

def test_uninit_restores_the_applications_unmasked_interrupts():
    stub = BareStub()
    stub.primask = 0
    stub.init()
    assert stub.primask == 1  # masked while the flash changes
    assert stub.call("UnInit", c("F4LOAD_FNC_PROGRAM")) == 0
    assert stub.primask == 0


def test_uninit_leaves_interrupts_masked_when_the_application_had_masked_them():
    stub = BareStub()
    stub.primask = 1
    stub.init()
    assert stub.call("UnInit", c("F4LOAD_FNC_PROGRAM")) == 0
    assert stub.primask == 1


def test_a_second_init_does_not_save_the_first_ones_masked_interrupts_and_disabled_caches():
    stub = BareStub()
    stub.primask = 0
    stub.write32(registers.FLASH_ACR, FLASH_ACR_ICEN | FLASH_ACR_DCEN)
    stub.init(fnc=c("F4LOAD_FNC_ERASE"))
    stub.init(fnc=c("F4LOAD_FNC_PROGRAM"))
    assert stub.read32(registers.FLASH_ACR) & (FLASH_ACR_ICEN | FLASH_ACR_DCEN) == 0
    assert stub.call("UnInit", c("F4LOAD_FNC_PROGRAM")) == 0
    assert stub.primask == 0
    assert stub.read32(registers.FLASH_ACR) & (FLASH_ACR_ICEN | FLASH_ACR_DCEN) == FLASH_ACR_ICEN | FLASH_ACR_DCEN


def test_uninit_without_init_locks_the_flash_and_changes_nothing_else():
    """Init may never have run (or the host calls UnInit to clean up after a crash): UnInit still locks CR,
    starts its own cycle counter for the BSY wait, and neither unmasks interrupts nor turns the caches off."""
    stub = BareStub()
    stub.write32(registers.FLASH_ACR, FLASH_ACR_ICEN | FLASH_ACR_DCEN)
    stub.write32(registers.FLASH_KEYR, 0x4567_0123)
    stub.write32(registers.FLASH_KEYR, 0xCDEF_89AB)
    assert not stub.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK
    stub.primask = 1
    assert stub.call("UnInit", c("F4LOAD_FNC_PROGRAM")) == 0
    assert stub.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK
    assert stub.primask == 1
    assert stub.read32(registers.FLASH_ACR) & (FLASH_ACR_ICEN | FLASH_ACR_DCEN) == FLASH_ACR_ICEN | FLASH_ACR_DCEN
