"""The virtual STM32F407's flash interface, driven register by register as software on the core would.

Each test is one scenario from RM0090 chapter 3 / DS8626 Table 40 as digested in
../shared/reference/f4-flash.md, or one documented modelling choice of f4load/sim/flash.py.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from f4load.part import FLASH_START, OTP_START, PARTS, SYSTEM_MEMORY
from f4load.registers import (
    FLASH_CR_EOPIE,
    FLASH_CR_ERRIE,
    FLASH_CR_LOCK,
    FLASH_CR_MER,
    FLASH_CR_PG,
    FLASH_CR_SER,
    FLASH_CR_STRT,
    FLASH_KEY1,
    FLASH_KEY2,
    FLASH_OPTCR_OPTLOCK,
    FLASH_OPTCR_OPTSTRT,
    FLASH_OPTKEY1,
    FLASH_OPTKEY2,
    FLASH_SR_BSY,
    FLASH_SR_EOP,
    FLASH_SR_OPERR,
    FLASH_SR_PGAERR,
    FLASH_SR_PGPERR,
    FLASH_SR_PGSERR,
    FLASH_SR_WRPERR,
    PSIZE_X8,
    PSIZE_X16,
    PSIZE_X32,
    PSIZE_X64,
)
from f4load.sim.clock import PS_PER_MS, PS_PER_S, PS_PER_US, VirtualClock
from f4load.sim.faults import Faults, ResetDuring
from f4load.sim.flash import BusFault, FlashInterface, OptionBytes

ACR, KEYR, OPTKEYR, SR, CR, OPTCR = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14
KB = 1024
SECTOR0, SECTOR1, SECTOR4, SECTOR5 = FLASH_START, FLASH_START + 0x4000, FLASH_START + 0x1_0000, FLASH_START + 0x2_0000


class Bench:
    """A flash interface on its own: a clock, a 512 KB (or 1 MB) array, option bytes and faults."""

    def __init__(self, faults: Optional[Faults] = None, options: Optional[OptionBytes] = None,
                 part: str = "stm32f407ve", fill: int = 0xFF) -> None:
        self.clock = VirtualClock()
        self.part = PARTS[part]
        self.storage = bytearray([fill]) * self.part.flash_size
        self.options = options or OptionBytes()
        self.faults = faults or Faults()
        self.flash = FlashInterface(self.clock, self.part, memoryview(self.storage), self.options, self.faults)
        self.resets: List[Tuple[int, str]] = []
        self.flash.request_reset = lambda cause: self.resets.append((self.clock.now_ps, cause))

    # register shorthands
    def sr(self) -> int:
        return self.flash.read_register(SR)

    def cr(self) -> int:
        return self.flash.read_register(CR)

    def write_cr(self, value: int) -> None:
        self.flash.write_register(CR, value)

    def unlock(self) -> None:
        self.flash.write_register(KEYR, FLASH_KEY1)
        self.flash.write_register(KEYR, FLASH_KEY2)

    def unlock_options(self) -> None:
        self.flash.write_register(OPTKEYR, FLASH_OPTKEY1)
        self.flash.write_register(OPTKEYR, FLASH_OPTKEY2)

    def advance_to(self, when_ps: int) -> None:
        self.clock.advance(when_ps - self.clock.now_ps)
        self.flash.on_time()

    def finish(self) -> int:
        """Run until the operation in progress ends; returns how long that took from now."""
        start = self.clock.now_ps
        end = self.flash.next_event_ps()
        assert end is not None, "no operation in progress"
        self.advance_to(end)
        return end - start

    def erase_sector(self, snb: int, psize: int = PSIZE_X32, extra: int = 0) -> None:
        self.write_cr(FLASH_CR_SER | (snb << 3) | (psize << 8) | extra)
        self.write_cr(FLASH_CR_SER | (snb << 3) | (psize << 8) | extra | FLASH_CR_STRT)

    def program(self, address: int, value: int, size: int = 4, psize: int = PSIZE_X32, extra: int = 0) -> None:
        self.write_cr(FLASH_CR_PG | (psize << 8) | extra)
        self.flash.write_flash(address, size, value)

    def program_options(self, optcr: int) -> None:
        self.flash.write_register(OPTCR, optcr & ~FLASH_OPTCR_OPTSTRT)
        self.flash.write_register(OPTCR, optcr | FLASH_OPTCR_OPTSTRT)

    def at(self, address: int, length: int = 4) -> bytes:
        return bytes(self.storage[address - FLASH_START:address - FLASH_START + length])


def optcr_with(rdp: int = 0xAA, nwrp: int = 0xFFF, user: int = 0xEC) -> int:
    return (nwrp << 16) | (rdp << 8) | user


# --- reset state, keys, lock -------------------------------------------------------------------------------

def test_after_reset_cr_is_locked_sr_is_clear_and_optcr_shows_factory_options():
    bench = Bench()
    assert bench.cr() == 0x8000_0000
    assert bench.sr() == 0
    assert bench.flash.read_register(OPTCR) == 0x0FFF_AAED
    assert bench.flash.read_register(ACR) == 0


def test_the_two_keys_in_order_unlock_cr():
    bench = Bench()
    bench.unlock()
    assert bench.cr() & FLASH_CR_LOCK == 0


def test_a_wrong_first_key_is_a_bus_error_and_keeps_cr_locked_until_reset():
    bench = Bench()
    with pytest.raises(BusFault):
        bench.flash.write_register(KEYR, 0x1234_5678)
    with pytest.raises(BusFault):
        bench.unlock()  # even the right keys fault now
    assert bench.cr() & FLASH_CR_LOCK
    bench.flash.system_reset()
    bench.unlock()
    assert bench.cr() & FLASH_CR_LOCK == 0


def test_a_wrong_second_key_is_a_bus_error():
    bench = Bench()
    bench.flash.write_register(KEYR, FLASH_KEY1)
    with pytest.raises(BusFault):
        bench.flash.write_register(KEYR, FLASH_KEY1)
    assert bench.cr() & FLASH_CR_LOCK


def test_keys_written_while_cr_is_unlocked_are_a_wrong_sequence():
    bench = Bench()
    bench.unlock()
    with pytest.raises(BusFault):
        bench.flash.write_register(KEYR, FLASH_KEY1)
    assert bench.cr() & FLASH_CR_LOCK


def test_a_key_written_as_halfwords_is_a_wrong_sequence():
    bench = Bench()
    with pytest.raises(BusFault):
        bench.flash.write_register(KEYR, FLASH_KEY1 & 0xFFFF, size=2)


def test_cr_writes_are_ignored_while_locked():
    bench = Bench()
    bench.write_cr(FLASH_CR_PG | (PSIZE_X32 << 8))
    assert bench.cr() == 0x8000_0000


def test_setting_lock_relocks_cr_and_the_keys_unlock_it_again():
    bench = Bench()
    bench.unlock()
    bench.write_cr(FLASH_CR_LOCK)
    bench.write_cr(FLASH_CR_PG)
    assert bench.cr() == FLASH_CR_LOCK
    bench.unlock()
    bench.write_cr(FLASH_CR_PG)
    assert bench.cr() == FLASH_CR_PG


def test_cr_reads_back_its_fields():
    bench = Bench()
    bench.unlock()
    value = FLASH_CR_SER | (11 << 3) | (PSIZE_X16 << 8) | FLASH_CR_EOPIE | FLASH_CR_ERRIE
    bench.write_cr(value)
    assert bench.cr() == value


def test_acr_stores_latency_prefetch_and_cache_bits():
    bench = Bench()
    bench.flash.write_register(ACR, 0xFFFF_FFFF)
    assert bench.flash.read_register(ACR) == 0x1F07
    bench.flash.write_register(ACR, 0x0000_0705)
    assert bench.flash.read_register(ACR) == 0x0705


def test_the_option_keys_clear_optlock():
    bench = Bench()
    bench.unlock_options()
    assert bench.flash.read_register(OPTCR) == 0x0FFF_AAEC


def test_a_wrong_option_key_is_a_bus_error_and_keeps_optcr_locked_until_reset():
    bench = Bench()
    with pytest.raises(BusFault):
        bench.flash.write_register(OPTKEYR, FLASH_KEY1)
    with pytest.raises(BusFault):
        bench.unlock_options()
    bench.flash.system_reset()
    bench.unlock_options()
    assert bench.flash.read_register(OPTCR) & FLASH_OPTCR_OPTLOCK == 0


def test_optcr_writes_are_ignored_while_optlock_is_set():
    bench = Bench()
    bench.flash.write_register(OPTCR, optcr_with(nwrp=0xFFE) | FLASH_OPTCR_OPTSTRT)
    assert bench.flash.read_register(OPTCR) == 0x0FFF_AAED
    assert not bench.flash.busy


def test_system_reset_locks_cr_clears_sr_and_the_key_lock():
    bench = Bench()
    bench.unlock()
    bench.flash.set_sticky(FLASH_SR_PGSERR | FLASH_SR_EOP)
    bench.flash.write_register(ACR, 0x105)
    bench.flash.system_reset()
    assert (bench.cr(), bench.sr(), bench.flash.read_register(ACR)) == (0x8000_0000, 0, 0)


# --- programming and the SR flags ----------------------------------------------------------------------------

def test_a_program_write_sets_bsy_for_16_us_then_the_word_is_in_flash():
    bench = Bench()
    bench.unlock()
    bench.program(SECTOR0, 0x1234_5678)
    assert bench.sr() & FLASH_SR_BSY
    assert bench.at(SECTOR0) == b"\xff\xff\xff\xff"  # the cells change at the end
    bench.advance_to(16 * PS_PER_US - 1)
    assert bench.sr() & FLASH_SR_BSY
    bench.advance_to(16 * PS_PER_US)
    assert bench.sr() == 0
    assert bench.at(SECTOR0) == bytes.fromhex("78563412")


def test_a_program_write_takes_100_us_with_maximum_timing():
    bench = Bench(Faults(max_timing=True))
    bench.unlock()
    bench.program(SECTOR0, 0)
    assert bench.finish() == 100 * PS_PER_US


@pytest.mark.parametrize("psize,size,value,expected", [
    (PSIZE_X8, 1, 0xA5, "a5ffffff"),
    (PSIZE_X16, 2, 0xBEEF, "efbeffff"),
    (PSIZE_X32, 4, 0xDEADBEEF, "efbeadde"),
])
def test_program_writes_of_each_psize_store_little_endian(psize, size, value, expected):
    bench = Bench()
    bench.unlock()
    bench.program(SECTOR1, value, size=size, psize=psize)
    bench.finish()
    assert bench.at(SECTOR1).hex() == expected
    assert bench.sr() & (FLASH_SR_PGPERR | FLASH_SR_PGSERR) == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 63), st.sampled_from([1, 2, 4]), st.integers(0, 0xFFFF_FFFF),
                          st.sampled_from([PSIZE_X8, PSIZE_X16, PSIZE_X32])), max_size=20))
def test_any_sequence_of_program_writes_only_clears_bits(writes):
    bench = Bench()
    bench.unlock()
    for offset, size, value, psize in writes:
        before = bench.at(SECTOR0, 64)
        bench.program(SECTOR0 + offset, value, size=size, psize=psize)
        if bench.flash.busy:
            bench.finish()
        after = bench.at(SECTOR0, 64)
        errors = bench.sr() & (FLASH_SR_PGPERR | FLASH_SR_PGAERR)
        if errors:
            assert after == before
        else:
            expected = bytearray(before)
            for i, byte in enumerate((value & ((1 << 8 * size) - 1)).to_bytes(size, "little")):
                expected[offset + i] &= byte
            assert after == bytes(expected)
        assert all(a & ~b == 0 for a, b in zip(after, before))
        bench.flash.write_register(SR, 0xF3)


def test_programming_only_clears_bits():
    bench = Bench(fill=0x0F)
    bench.unlock()
    bench.program(SECTOR0, 0xF0F0_F0FF)
    bench.finish()
    assert bench.at(SECTOR0) == bytes([0x0F, 0x00, 0x00, 0x00])


def test_eop_is_set_at_the_end_only_when_eopie_is_set():
    bench = Bench()
    bench.unlock()
    bench.program(SECTOR0, 0, extra=FLASH_CR_EOPIE)
    assert bench.sr() & FLASH_SR_EOP == 0
    bench.finish()
    assert bench.sr() == FLASH_SR_EOP
    bench.program(SECTOR0 + 4, 0)
    bench.flash.write_register(SR, FLASH_SR_EOP)
    bench.finish()
    assert bench.sr() == 0


def test_sr_flags_are_cleared_by_writing_one_and_bsy_is_read_only():
    bench = Bench()
    bench.flash.set_sticky(FLASH_SR_EOP | FLASH_SR_OPERR | FLASH_SR_WRPERR | FLASH_SR_PGAERR | FLASH_SR_PGPERR
                           | FLASH_SR_PGSERR)
    bench.flash.write_register(SR, FLASH_SR_PGSERR | FLASH_SR_EOP | FLASH_SR_BSY)
    assert bench.sr() == FLASH_SR_OPERR | FLASH_SR_WRPERR | FLASH_SR_PGAERR | FLASH_SR_PGPERR
    bench.flash.write_register(SR, 0)
    assert bench.sr() == FLASH_SR_OPERR | FLASH_SR_WRPERR | FLASH_SR_PGAERR | FLASH_SR_PGPERR
    bench.flash.write_register(SR, 0xFFFF_FFFF)
    assert bench.sr() == 0


def test_a_flash_write_without_pg_sets_pgserr_and_changes_nothing():
    bench = Bench()
    bench.unlock()
    bench.flash.write_flash(SECTOR0, 4, 0)
    assert bench.sr() == FLASH_SR_PGSERR
    assert bench.at(SECTOR0) == b"\xff" * 4
    assert bench.flash.next_event_ps() is None


def test_a_flash_write_while_cr_is_locked_sets_pgserr():
    bench = Bench()
    bench.flash.write_flash(SECTOR0, 4, 0)
    assert bench.sr() == FLASH_SR_PGSERR


def test_a_write_narrower_than_psize_sets_pgperr():
    bench = Bench()
    bench.unlock()
    bench.program(SECTOR0, 0, size=2, psize=PSIZE_X32)
    assert bench.sr() == FLASH_SR_PGPERR
    assert bench.at(SECTOR0) == b"\xff" * 4


def test_a_word_write_with_psize_x8_sets_pgperr():
    bench = Bench()
    bench.unlock()
    bench.program(SECTOR0, 0, size=4, psize=PSIZE_X8)
    assert bench.sr() == FLASH_SR_PGPERR


def test_a_write_crossing_a_16_byte_row_sets_pgaerr():
    bench = Bench()
    bench.unlock()
    bench.program(SECTOR0 + 0x0E, 0, size=4)
    assert bench.sr() == FLASH_SR_PGAERR
    assert bench.at(SECTOR0, 32) == b"\xff" * 32


def test_a_write_ending_exactly_at_a_row_boundary_is_fine():
    bench = Bench()
    bench.unlock()
    bench.program(SECTOR0 + 0x0C, 0, size=4)
    bench.finish()
    assert bench.sr() == 0
    assert bench.at(SECTOR0 + 0x0C) == b"\x00" * 4


def test_programming_a_write_protected_sector_sets_wrperr():
    bench = Bench(options=OptionBytes(optcr=optcr_with(nwrp=0xFFD)))  # sector 1 protected
    bench.unlock()
    bench.program(SECTOR1, 0)
    assert bench.sr() == FLASH_SR_WRPERR
    assert bench.at(SECTOR1) == b"\xff" * 4
    bench.flash.write_register(SR, FLASH_SR_WRPERR)
    bench.program(SECTOR0, 0)  # the neighbour is not protected
    bench.finish()
    assert bench.at(SECTOR0) == b"\x00" * 4


def test_rdp_level1_with_a_debugger_attached_refuses_programs_with_wrperr():
    bench = Bench(options=OptionBytes(optcr=optcr_with(rdp=0x55)))
    bench.flash.debugger_attached = True
    bench.unlock()
    bench.program(SECTOR0, 0)
    assert bench.sr() == FLASH_SR_WRPERR
    assert bench.at(SECTOR0) == b"\xff" * 4


def test_rdp_level1_without_a_debugger_programs_normally():
    bench = Bench(options=OptionBytes(optcr=optcr_with(rdp=0x55)))
    bench.unlock()
    bench.program(SECTOR0, 0)
    bench.finish()
    assert bench.at(SECTOR0) == b"\x00" * 4


def test_reads_are_blocked_only_at_rdp_level1_with_a_debugger():
    level1 = Bench(options=OptionBytes(optcr=optcr_with(rdp=0x55)))
    assert not level1.flash.reads_blocked
    level1.flash.debugger_attached = True
    assert level1.flash.reads_blocked
    level0 = Bench()
    level0.flash.debugger_attached = True
    assert not level0.flash.reads_blocked


# --- sticky flags -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("left_over", [FLASH_SR_PGSERR, FLASH_SR_PGPERR, FLASH_SR_PGAERR])
def test_a_program_is_refused_while_an_old_sequence_error_is_set(left_over):
    bench = Bench()
    bench.flash.set_sticky(left_over)
    bench.unlock()
    bench.program(SECTOR0, 0)
    assert bench.sr() == left_over | FLASH_SR_PGSERR
    assert not bench.flash.busy
    assert bench.at(SECTOR0) == b"\xff" * 4


def test_an_erase_is_refused_while_an_old_pgperr_is_set():
    bench = Bench(fill=0)
    bench.flash.set_sticky(FLASH_SR_PGPERR)
    bench.unlock()
    bench.erase_sector(0)
    assert bench.sr() == FLASH_SR_PGPERR | FLASH_SR_PGSERR
    assert bench.flash.next_event_ps() is None
    assert bench.at(SECTOR0) == b"\x00" * 4


def test_clearing_the_sticky_flags_lets_the_next_program_run():
    bench = Bench()
    bench.flash.set_sticky(FLASH_SR_PGAERR | FLASH_SR_PGSERR)
    bench.unlock()
    bench.flash.write_register(SR, FLASH_SR_PGAERR | FLASH_SR_PGSERR)
    bench.program(SECTOR0, 0)
    bench.finish()
    assert bench.at(SECTOR0) == b"\x00" * 4


def test_an_old_wrperr_does_not_refuse_a_program():
    bench = Bench()
    bench.flash.set_sticky(FLASH_SR_WRPERR)
    bench.unlock()
    bench.program(SECTOR0, 0)
    bench.finish()
    assert bench.at(SECTOR0) == b"\x00" * 4
    assert bench.sr() == FLASH_SR_WRPERR


# --- erase ------------------------------------------------------------------------------------------------------

# DS8626 Table 40, typical / maximum, in ms: (sector size, PSIZE) -> (typ, max)
ERASE_TABLE_MS = {
    (16 * KB, PSIZE_X8): (400, 800), (16 * KB, PSIZE_X16): (300, 600), (16 * KB, PSIZE_X32): (250, 500),
    (64 * KB, PSIZE_X8): (1200, 2400), (64 * KB, PSIZE_X16): (700, 1400), (64 * KB, PSIZE_X32): (550, 1100),
    (128 * KB, PSIZE_X8): (2000, 4000), (128 * KB, PSIZE_X16): (1300, 2600), (128 * KB, PSIZE_X32): (1000, 2000),
}
SUPPLY_FOR_PSIZE = {PSIZE_X8: 1.8, PSIZE_X16: 2.1, PSIZE_X32: 2.7}
SNB_OF_SIZE = {16 * KB: 3, 64 * KB: 4, 128 * KB: 7}


@pytest.mark.parametrize("size,psize", sorted(ERASE_TABLE_MS))
@pytest.mark.parametrize("max_timing", [False, True])
def test_a_sector_erase_keeps_bsy_for_exactly_the_ds8626_time(size, psize, max_timing):
    bench = Bench(Faults(max_timing=max_timing, supply_voltage=SUPPLY_FOR_PSIZE[psize]), fill=0)
    snb = SNB_OF_SIZE[size]
    sector = bench.part.sectors[snb]
    bench.unlock()
    bench.erase_sector(snb, psize)
    duration = ERASE_TABLE_MS[(size, psize)][max_timing] * PS_PER_MS
    assert bench.flash.next_event_ps() == duration
    bench.advance_to(duration - 1)
    assert bench.sr() == FLASH_SR_BSY
    assert bench.cr() & FLASH_CR_STRT
    assert bench.at(sector.start) == b"\x00" * 4
    bench.advance_to(duration)
    assert bench.sr() == 0
    assert bench.cr() & FLASH_CR_STRT == 0
    assert bench.at(sector.start, sector.size) == b"\xff" * sector.size
    assert bench.at(sector.start - 4) == b"\x00" * 4
    assert bench.part.sector_at(sector.end) is None or bench.at(sector.end) == b"\x00" * 4


@pytest.mark.parametrize("psize,typ_s,max_s", [(PSIZE_X8, 16, 32), (PSIZE_X16, 11, 22), (PSIZE_X32, 8, 16)])
def test_a_mass_erase_takes_the_ds8626_time_and_erases_everything(psize, typ_s, max_s):
    for max_timing, seconds in ((False, typ_s), (True, max_s)):
        bench = Bench(Faults(max_timing=max_timing, supply_voltage=SUPPLY_FOR_PSIZE[psize]), fill=0x12)
        bench.unlock()
        bench.write_cr(FLASH_CR_MER | (psize << 8))
        bench.write_cr(FLASH_CR_MER | (psize << 8) | FLASH_CR_STRT)
        assert bench.finish() == seconds * PS_PER_S
        assert bench.storage == b"\xff" * len(bench.storage)
        assert bench.sr() == 0


def test_an_erase_sets_eop_when_eopie_is_set():
    bench = Bench()
    bench.unlock()
    bench.erase_sector(0, extra=FLASH_CR_EOPIE)
    bench.finish()
    assert bench.sr() == FLASH_SR_EOP


def test_erasing_a_write_protected_sector_sets_wrperr():
    bench = Bench(options=OptionBytes(optcr=optcr_with(nwrp=0xFFF & ~(1 << 4))), fill=0)
    bench.unlock()
    bench.erase_sector(4)
    assert bench.sr() == FLASH_SR_WRPERR
    assert not bench.flash.busy
    assert bench.at(SECTOR4) == b"\x00" * 4


def test_a_mass_erase_with_any_protected_sector_sets_wrperr():
    bench = Bench(options=OptionBytes(optcr=optcr_with(nwrp=0xFFF & ~(1 << 7))), fill=0)
    bench.unlock()
    bench.write_cr(FLASH_CR_MER | (PSIZE_X32 << 8) | FLASH_CR_STRT)
    assert bench.sr() == FLASH_SR_WRPERR
    assert bench.at(SECTOR0) == b"\x00" * 4


def test_an_snb_beyond_the_last_sector_of_a_512_kb_part_sets_wrperr():
    bench = Bench()
    bench.unlock()
    bench.erase_sector(8)
    assert bench.sr() == FLASH_SR_WRPERR
    assert not bench.flash.busy


def test_sector_11_exists_on_a_1_mb_part():
    bench = Bench(part="stm32f407vg", fill=0)
    bench.unlock()
    bench.erase_sector(11)
    assert bench.finish() == 1 * PS_PER_S
    assert bench.at(FLASH_START + 0xE_0000, 128 * KB) == b"\xff" * (128 * KB)
    assert bench.sr() == 0


def test_mer_and_ser_together_set_wrperr():
    bench = Bench(fill=0)
    bench.unlock()
    bench.write_cr(FLASH_CR_MER | FLASH_CR_SER | (PSIZE_X32 << 8) | FLASH_CR_STRT)
    assert bench.sr() == FLASH_SR_WRPERR
    assert bench.at(SECTOR0) == b"\x00" * 4


def test_an_erase_at_rdp_level1_with_a_debugger_sets_wrperr():
    bench = Bench(options=OptionBytes(optcr=optcr_with(rdp=0x00)), fill=0)
    bench.flash.debugger_attached = True
    bench.unlock()
    bench.erase_sector(0)
    assert bench.sr() == FLASH_SR_WRPERR
    assert bench.at(SECTOR0) == b"\x00" * 4


def test_an_erase_started_with_pg_set_sets_pgserr():
    bench = Bench(fill=0)
    bench.unlock()
    bench.erase_sector(0, extra=FLASH_CR_PG)
    assert bench.sr() == FLASH_SR_PGSERR
    assert not bench.flash.busy


def test_strt_without_ser_or_mer_does_nothing():
    bench = Bench(fill=0)
    bench.unlock()
    bench.write_cr((PSIZE_X32 << 8) | FLASH_CR_STRT)
    assert bench.sr() == 0
    assert bench.flash.next_event_ps() is None
    assert bench.cr() & FLASH_CR_STRT == 0


def test_a_cr_write_while_busy_is_stalled_so_the_chip_must_wait_for_busy_until():
    bench = Bench(fill=0)
    bench.unlock()
    bench.erase_sector(0)
    assert bench.flash.busy
    assert bench.flash.busy_until_ps() == 250 * PS_PER_MS
    bench.advance_to(bench.flash.busy_until_ps())  # what the chip does before delivering the CR write
    bench.erase_sector(1)
    assert bench.finish() == 250 * PS_PER_MS
    assert bench.at(SECTOR1) == b"\xff" * 4


def test_bsy_stuck_applies_the_erase_but_bsy_never_clears():
    bench = Bench(Faults(bsy_stuck=True), fill=0)
    bench.unlock()
    bench.erase_sector(0)
    bench.finish()
    assert bench.at(SECTOR0) == b"\xff" * 4
    bench.advance_to(100 * PS_PER_S)
    assert bench.sr() & FLASH_SR_BSY
    assert bench.flash.next_event_ps() is None
    assert bench.flash.busy_until_ps() is None  # a stalled bus access would wait for ever


def test_a_stall_during_a_reset_fault_waits_until_the_reset():
    bench = Bench(Faults(reset_during=[ResetDuring("erase", phase="middle")]), fill=0)
    bench.unlock()
    bench.erase_sector(0)
    assert bench.flash.busy_until_ps() == 125 * PS_PER_MS
    bench.advance_to(125 * PS_PER_MS)
    assert bench.resets == [(125 * PS_PER_MS, "brownout")]
    assert bench.flash.busy_until_ps() is None  # until the chip performs the reset it was asked for
    bench.flash.system_reset()
    assert bench.flash.busy_until_ps() == 125 * PS_PER_MS


def test_with_bsy_stuck_a_later_program_write_is_refused_with_pgserr():
    bench = Bench(Faults(bsy_stuck=True))
    bench.unlock()
    bench.program(SECTOR0, 0)
    bench.finish()
    bench.flash.write_flash(SECTOR0 + 4, 4, 0)
    assert bench.sr() == FLASH_SR_BSY | FLASH_SR_PGSERR
    assert bench.at(SECTOR0 + 4) == b"\xff" * 4


def test_bsy_stuck_clears_at_reset():
    bench = Bench(Faults(bsy_stuck=True))
    bench.unlock()
    bench.program(SECTOR0, 0)
    bench.finish()
    bench.flash.system_reset()
    assert bench.sr() == 0


# --- supply voltage versus PSIZE ----------------------------------------------------------------------------

def test_an_x32_erase_at_2_5_volts_erases_nothing_and_sets_operr_with_errie():
    bench = Bench(Faults(supply_voltage=2.5), fill=0)
    bench.unlock()
    bench.erase_sector(0, PSIZE_X32, extra=FLASH_CR_ERRIE)
    assert bench.finish() == 250 * PS_PER_MS
    assert bench.sr() == FLASH_SR_OPERR
    assert bench.at(SECTOR0, 16 * KB) == b"\x00" * (16 * KB)


def test_an_x32_erase_at_2_5_volts_without_errie_looks_successful_but_erases_nothing():
    bench = Bench(Faults(supply_voltage=2.5), fill=0)
    bench.unlock()
    bench.erase_sector(0, PSIZE_X32, extra=FLASH_CR_EOPIE)
    bench.finish()
    assert bench.sr() == FLASH_SR_EOP
    assert bench.at(SECTOR0) == b"\x00" * 4


def test_an_x16_erase_at_2_5_volts_works():
    bench = Bench(Faults(supply_voltage=2.5), fill=0)
    bench.unlock()
    bench.erase_sector(0, PSIZE_X16, extra=FLASH_CR_ERRIE)
    assert bench.finish() == 300 * PS_PER_MS
    assert bench.sr() == 0
    assert bench.at(SECTOR0) == b"\xff" * 4


def test_at_1_9_volts_x8_programs_and_x16_does_not():
    bench = Bench(Faults(supply_voltage=1.9))
    bench.unlock()
    bench.program(SECTOR0, 0x00, size=1, psize=PSIZE_X8, extra=FLASH_CR_ERRIE)
    bench.finish()
    assert bench.sr() == 0
    bench.program(SECTOR0 + 2, 0x0000, size=2, psize=PSIZE_X16, extra=FLASH_CR_ERRIE)
    bench.finish()
    assert bench.sr() == FLASH_SR_OPERR
    assert bench.at(SECTOR0) == b"\x00\xff\xff\xff"


def test_x64_needs_vpp_so_an_x64_erase_at_3_3_volts_does_not_take():
    bench = Bench(fill=0)
    bench.unlock()
    bench.erase_sector(0, PSIZE_X64, extra=FLASH_CR_ERRIE)
    assert bench.finish() == 230 * PS_PER_MS
    assert bench.sr() == FLASH_SR_OPERR
    assert bench.at(SECTOR0) == b"\x00" * 4


def test_x64_program_writes_cannot_match_any_bus_access_size():
    bench = Bench()
    bench.unlock()
    bench.program(SECTOR0, 0, size=4, psize=PSIZE_X64)
    assert bench.sr() == FLASH_SR_PGPERR


# --- OTP and other areas --------------------------------------------------------------------------------------

def test_otp_bytes_are_programmed_like_flash():
    bench = Bench()
    bench.unlock()
    bench.program(OTP_START + 0x20, 0x1122_3344)
    bench.finish()
    assert bench.options.otp[0x20:0x24] == bytes.fromhex("44332211")


def test_a_locked_otp_block_refuses_programs_with_wrperr():
    bench = Bench()
    bench.options.otp[512 + 1] = 0x00  # lock byte of block 1 (0x1FFF_7820..)
    bench.unlock()
    bench.program(OTP_START + 0x20, 0)
    assert bench.sr() == FLASH_SR_WRPERR
    assert bench.options.otp[0x20:0x24] == b"\xff" * 4


def test_writes_to_system_memory_set_wrperr():
    bench = Bench()
    bench.unlock()
    bench.program(SYSTEM_MEMORY, 0)
    assert bench.sr() == FLASH_SR_WRPERR


# --- option bytes -------------------------------------------------------------------------------------------

def test_factory_option_bytes_are_level0_unprotected_with_a_software_watchdog():
    options = OptionBytes()
    assert options.optcr == 0x0FFF_AAEC
    assert (options.rdp_level, options.write_protected_sectors, options.hardware_watchdog) == (0, [], False)
    assert options.otp == b"\xff" * 528


@pytest.mark.parametrize("rdp,level", [(0xAA, 0), (0xCC, 2), (0x55, 1), (0x00, 1), (0xFF, 1)])
def test_the_rdp_byte_decodes_to_a_level(rdp, level):
    assert OptionBytes(optcr=optcr_with(rdp=rdp)).rdp_level == level


def test_option_bytes_survive_a_round_trip_through_a_dict():
    options = OptionBytes(optcr=optcr_with(rdp=0x55, nwrp=0xF0F, user=0xCC))
    options.otp[3] = 0x42
    again = OptionBytes.from_dict(options.to_dict())
    assert again == options
    assert again.write_protected_sectors == [4, 5, 6, 7]
    assert again.hardware_watchdog


def test_programming_nwrp_protects_a_sector_after_the_option_programming_time():
    bench = Bench()
    bench.unlock_options()
    bench.program_options(optcr_with(nwrp=0xFFF & ~(1 << 2)))
    assert bench.sr() == FLASH_SR_BSY
    assert bench.flash.read_register(OPTCR) & FLASH_OPTCR_OPTSTRT
    assert bench.options.write_protected_sectors == []
    assert bench.finish() == 250 * PS_PER_MS
    assert bench.options.write_protected_sectors == [2]
    assert bench.flash.read_register(OPTCR) == optcr_with(nwrp=0xFFB)
    bench.unlock()
    bench.erase_sector(2)
    assert bench.sr() == FLASH_SR_WRPERR


def test_option_programming_takes_500_ms_with_maximum_timing():
    bench = Bench(Faults(max_timing=True))
    bench.unlock_options()
    bench.program_options(optcr_with(user=0xC8))
    assert bench.finish() == 500 * PS_PER_MS


def test_user_option_bits_bor_wdg_and_nrst_are_programmed():
    bench = Bench()
    bench.unlock_options()
    bench.program_options(optcr_with(user=0x00))  # BOR level 3, hardware watchdog, reset on stop/standby
    bench.finish()
    assert bench.options.optcr == optcr_with(user=0x00)
    assert bench.options.hardware_watchdog


def test_rdp_can_be_written_as_one_byte_like_the_st_hal_does():
    bench = Bench()
    bench.unlock_options()
    bench.flash.write_register(OPTCR + 1, 0x55, size=1)
    bench.flash.write_register(OPTCR, 0xEC | FLASH_OPTCR_OPTSTRT, size=1)
    bench.finish()
    assert bench.options.rdp_level == 1
    assert bench.options.optcr == optcr_with(rdp=0x55)


def test_optcr_changes_without_optstrt_are_lost_at_reset():
    bench = Bench()
    bench.unlock_options()
    bench.flash.write_register(OPTCR, optcr_with(nwrp=0))
    bench.flash.system_reset()
    assert bench.flash.read_register(OPTCR) == 0x0FFF_AAED
    assert bench.options.write_protected_sectors == []


def test_level0_to_level1_blocks_reads_once_a_debugger_is_attached():
    bench = Bench()
    bench.flash.debugger_attached = True
    bench.unlock_options()
    bench.program_options(optcr_with(rdp=0x55))
    assert not bench.flash.reads_blocked
    bench.finish()
    assert bench.flash.reads_blocked


def test_level1_to_level0_mass_erases_main_flash_then_takes_effect():
    bench = Bench(options=OptionBytes(optcr=optcr_with(rdp=0x55)), fill=0x5A)
    bench.flash.debugger_attached = True
    bench.unlock_options()
    bench.program_options(optcr_with(rdp=0xAA))
    assert bench.options.rdp_level == 1
    assert bench.finish() == 250 * PS_PER_MS + 8 * PS_PER_S
    assert bench.storage == b"\xff" * len(bench.storage)
    assert bench.options.rdp_level == 0
    assert not bench.flash.reads_blocked


def test_level1_to_level0_with_maximum_timing_takes_16_5_s():
    bench = Bench(Faults(max_timing=True), options=OptionBytes(optcr=optcr_with(rdp=0x55)))
    bench.unlock_options()
    bench.program_options(optcr_with(rdp=0xAA))
    assert bench.finish() == 500 * PS_PER_MS + 16 * PS_PER_S


def test_level1_to_level1_changes_keep_the_flash():
    bench = Bench(options=OptionBytes(optcr=optcr_with(rdp=0x55)), fill=0x5A)
    bench.unlock_options()
    bench.program_options(optcr_with(rdp=0x33, nwrp=0xFFE))
    assert bench.finish() == 250 * PS_PER_MS
    assert bench.at(SECTOR0) == b"\x5a" * 4
    assert bench.options.write_protected_sectors == [0]


def test_level2_makes_the_option_bytes_permanent():
    bench = Bench(fill=0x5A)
    bench.unlock_options()
    bench.program_options(optcr_with(rdp=0xCC))
    bench.finish()
    assert bench.options.rdp_level == 2
    bench.flash.system_reset()
    bench.unlock_options()
    bench.program_options(optcr_with(rdp=0xAA))
    assert bench.sr() == FLASH_SR_WRPERR
    assert not bench.flash.busy
    bench.flash.system_reset()
    assert bench.options.rdp_level == 2
    assert bench.flash.read_register(OPTCR) == optcr_with(rdp=0xCC) | FLASH_OPTCR_OPTLOCK
    assert bench.at(SECTOR0) == b"\x5a" * 4


def test_system_reset_reloads_optcr_from_the_programmed_option_bytes():
    bench = Bench()
    bench.unlock_options()
    bench.program_options(optcr_with(nwrp=0x0FF))
    bench.finish()
    bench.flash.system_reset()
    assert bench.flash.read_register(OPTCR) == optcr_with(nwrp=0x0FF) | FLASH_OPTCR_OPTLOCK


# --- reset_during faults, resets cutting operations ---------------------------------------------------------

def test_operation_counts_count_started_erases_and_program_writes():
    bench = Bench()
    bench.unlock()
    for i in range(3):
        bench.program(SECTOR0 + 4 * i, 0)
        bench.finish()
    bench.erase_sector(0)
    bench.finish()
    bench.write_cr(FLASH_CR_MER | (PSIZE_X32 << 8) | FLASH_CR_STRT)
    bench.finish()
    bench.program(SECTOR0, 0, size=2)  # refused (PGPERR): not an operation
    assert bench.flash.operation_counts == {"erase": 2, "program": 3}


def test_reset_at_the_start_of_the_second_program_write_changes_nothing():
    bench = Bench(Faults(reset_during=[ResetDuring("program", nth=2, phase="start", cause="pin")]))
    bench.unlock()
    bench.program(SECTOR0, 0)
    bench.finish()
    bench.program(SECTOR0 + 4, 0)
    assert bench.resets == [(16 * PS_PER_US, "pin")]
    assert not bench.flash.busy
    assert bench.at(SECTOR0, 8) == b"\x00" * 4 + b"\xff" * 4


def test_reset_in_the_middle_of_an_erase_leaves_the_first_half_erased():
    bench = Bench(Faults(reset_during=[ResetDuring("erase", nth=1, phase="middle", cause="brownout")]), fill=0)
    bench.unlock()
    bench.erase_sector(5)
    assert bench.flash.next_event_ps() == 500 * PS_PER_MS
    bench.advance_to(500 * PS_PER_MS - 1)
    assert bench.resets == []
    bench.advance_to(500 * PS_PER_MS)
    assert bench.resets == [(500 * PS_PER_MS, "brownout")]
    assert bench.at(SECTOR5, 64 * KB) == b"\xff" * (64 * KB)
    assert bench.at(SECTOR5 + 64 * KB, 64 * KB) == b"\x00" * (64 * KB)
    bench.flash.system_reset()  # what the chip does for the reset it was asked for
    assert bench.sr() == 0 and bench.cr() == FLASH_CR_LOCK
    assert bench.at(SECTOR5 + 64 * KB) == b"\x00" * 4


def test_reset_in_the_middle_of_a_mass_erase_leaves_the_first_half_of_flash_erased():
    bench = Bench(Faults(reset_during=[ResetDuring("erase", phase="middle", cause="iwdg")]), fill=0)
    bench.unlock()
    bench.write_cr(FLASH_CR_MER | (PSIZE_X32 << 8) | FLASH_CR_STRT)
    bench.finish()
    half = len(bench.storage) // 2
    assert bench.resets == [(4 * PS_PER_S, "iwdg")]
    assert bench.storage[:half] == b"\xff" * half
    assert bench.storage[half:] == b"\x00" * half


def test_reset_in_the_middle_of_a_program_write_leaves_the_lower_half_programmed():
    bench = Bench(Faults(reset_during=[ResetDuring("program", nth=1, phase="middle")]))
    bench.unlock()
    bench.program(SECTOR0, 0x1122_3344)
    assert bench.finish() == 8 * PS_PER_US
    assert bench.resets == [(8 * PS_PER_US, "brownout")]
    assert bench.at(SECTOR0) == bytes.fromhex("4433ffff")


def test_a_reset_cut_erase_stays_busy_until_the_chip_resets():
    bench = Bench(Faults(reset_during=[ResetDuring("erase", phase="middle")]), fill=0)
    bench.unlock()
    bench.erase_sector(0)
    bench.finish()
    assert bench.flash.busy
    assert bench.flash.next_event_ps() is None
    bench.advance_to(10 * PS_PER_S)
    assert bench.at(SECTOR0 + 8 * KB) == b"\x00" * 4  # the second half is never erased


def test_a_system_reset_during_an_erase_cuts_it_in_proportion_to_the_time_spent():
    bench = Bench(fill=0)
    bench.unlock()
    bench.erase_sector(1)
    bench.advance_to(250 * PS_PER_MS // 4)
    bench.flash.system_reset()
    assert bench.at(SECTOR1, 4 * KB) == b"\xff" * (4 * KB)
    assert bench.at(SECTOR1 + 4 * KB, 12 * KB) == b"\x00" * (12 * KB)
    assert not bench.flash.busy
    assert bench.flash.next_event_ps() is None


def test_a_system_reset_during_option_programming_leaves_the_options_unchanged():
    bench = Bench()
    bench.unlock_options()
    bench.program_options(optcr_with(rdp=0x55))
    bench.advance_to(100 * PS_PER_MS)
    bench.flash.system_reset()
    assert bench.options.rdp_level == 0
    assert bench.flash.read_register(OPTCR) == 0x0FFF_AAED


def test_without_a_chip_a_reset_fault_raises():
    clock = VirtualClock()
    faults = Faults(reset_during=[ResetDuring("program", phase="start")])
    flash = FlashInterface(clock, PARTS["stm32f407ve"], memoryview(bytearray(512 * KB)), OptionBytes(), faults)
    flash.write_register(KEYR, FLASH_KEY1)
    flash.write_register(KEYR, FLASH_KEY2)
    flash.write_register(CR, FLASH_CR_PG | (PSIZE_X32 << 8))
    with pytest.raises(RuntimeError):
        flash.write_flash(FLASH_START, 4, 0)


def test_on_operation_hears_the_start_and_end_of_each_operation():
    bench = Bench()
    heard: List[Tuple[str, str]] = []
    bench.flash.on_operation = lambda kind, phase: heard.append((kind, phase))
    bench.unlock()
    bench.program(SECTOR0, 0)
    bench.finish()
    bench.erase_sector(0)
    bench.flash.system_reset()
    assert heard == [("program", "start"), ("program", "end"), ("erase", "start"), ("erase", "cut")]


# --- the register sequences of the Keil STM32F4xx_2048 peer algorithm ----------------------------------------

def test_the_peer_erase_sequence_erases_a_sector_at_x8_in_400_ms():
    """EraseSector of the Keil FLM: clear SR errors, CR = SER (PSIZE left at x8), CR |= SNB, CR |= STRT."""
    bench = Bench(fill=0)
    bench.unlock()
    bench.flash.write_register(SR, bench.sr() | 0xF0)
    bench.write_cr(FLASH_CR_SER)
    bench.write_cr(bench.cr() | (1 << 3))
    bench.write_cr(bench.cr() | FLASH_CR_STRT)
    assert bench.finish() == 400 * PS_PER_MS
    bench.write_cr(bench.cr() & ~FLASH_CR_SER)
    assert bench.sr() & 0xF0 == 0
    assert bench.at(SECTOR1, 16 * KB) == b"\xff" * (16 * KB)


def test_the_peer_mass_erase_sets_bit_15_which_this_part_ignores():
    """EraseChip of the Keil FLM sets MER and bit 15 (MER1 on F42x/43x; reserved on F40x/41x)."""
    bench = Bench(fill=0)
    bench.unlock()
    bench.write_cr(bench.cr() | FLASH_CR_MER)
    bench.write_cr(bench.cr() | (1 << 15))
    bench.write_cr(bench.cr() | FLASH_CR_STRT)
    assert bench.finish() == 16 * PS_PER_S  # PSIZE still x8 after reset
    assert bench.sr() == 0
    assert bench.storage == b"\xff" * len(bench.storage)


def test_the_peer_program_sequence_programs_word_by_word():
    """ProgramPage of the Keil FLM: CR = 0, then per word CR |= PG | x32, store, wait, CR &= ~PG."""
    bench = Bench()
    bench.unlock()
    bench.write_cr(0)
    for i, word in enumerate((0x0302_0100, 0x0706_0504)):
        bench.write_cr(bench.cr() | FLASH_CR_PG | (PSIZE_X32 << 8))
        bench.flash.write_flash(SECTOR0 + 4 * i, 4, word)
        assert bench.finish() == 16 * PS_PER_US
        bench.write_cr(bench.cr() & ~FLASH_CR_PG)
        assert bench.sr() & 0xF0 == 0
    assert bench.at(SECTOR0, 8) == bytes(range(8))
