"""The debug side of the virtual STM32F407: SW-DP and AHB-AP registers, DHCSR/DCRSR/DEMCR, DWT, FPB, identity.

Everything here goes through `DebugPort` (as the probe plugin does) or the chip's debugger bus, never through
the chip's Python attributes, unless the test says what it checks. Programs are a few hand-encoded Thumb
halfwords.
"""
from __future__ import annotations

import struct
from typing import Sequence

import pytest

from f4load.registers import DBGMCU_IDCODE, DCRDR, DCRSR, DEMCR, DHCSR, DWT_CTRL, DWT_CYCCNT, ROM_TABLE_BASE
from f4load.sim.chip import Chip
from f4load.sim.clock import PS_PER_MS, PS_PER_US
from f4load.sim.debug import DFSR_BKPT
from f4load.sim.debug_port import DebugPort
from f4load.sim.faults import Faults
from f4load.sim.flash import BusFault

SRAM = 0x2000_0000
DBGKEY = 0xA05F << 16
C_DEBUGEN, C_HALT, C_STEP = 1 << 0, 1 << 1, 1 << 2
S_REGRDY, S_HALT, S_RETIRE_ST, S_RESET_ST = 1 << 16, 1 << 17, 1 << 24, 1 << 25
REGWNR = 1 << 16
DFSR = 0xE000_ED30
CPUID = 0xE000_ED00

# Hand-encoded Thumb.
MOVS_R0_1, ADDS_R0_1, B_SELF, BKPT, NOP = 0x2001, 0x3001, 0xE7FE, 0xBE00, 0xBF00

# DP/AP registers as pyocd hands them to a probe with MANAGED_AP_SELECTION: (APSEL << 24) | register.
DP_IDR, DP_ABORT, DP_CTRL_STAT, DP_SELECT, DP_RDBUFF = 0x0, 0x0, 0x4, 0x8, 0xC
AP_CSW, AP_TAR, AP_DRW, AP_BD0, AP_CFG, AP_BASE, AP_IDR = 0x00, 0x04, 0x0C, 0x10, 0xF4, 0xF8, 0xFC
POWER_UP_REQ = (1 << 30) | (1 << 28)
POWER_UP_ACK = (1 << 31) | (1 << 29)
STICKYERR = 1 << 5
CSW_WORD_INC = 0x2300_0052  # HPROT, single auto-increment, 32-bit


def thumb(halfwords: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(halfwords)}H", *halfwords)


def powered_port(faults: Faults = Faults()) -> DebugPort:  # noqa: B008 - Faults is a plain data class
    chip = Chip(faults)
    chip.power_on()
    dp = DebugPort(chip)
    dp.write_dp(DP_CTRL_STAT, POWER_UP_REQ)
    return dp


def halted_on(dp: DebugPort, code: Sequence[int]) -> Chip:
    """Halt through DHCSR with `code` at SRAM and PC there (through DCRDR/DCRSR, as a debugger does)."""
    chip = dp.chip
    chip.bus_write(DHCSR, 4, DBGKEY | C_DEBUGEN | C_HALT)
    chip.bus_write_block(SRAM, thumb(code))
    for regsel, value in ((15, SRAM), (13, SRAM + 0x1000), (16, 1 << 24)):
        chip.bus_write(DCRDR, 4, value)
        chip.bus_write(DCRSR, 4, REGWNR | regsel)
    return chip


# --- DP and AHB-AP --------------------------------------------------------------------------------------
def test_dp_idr_and_the_power_up_handshake() -> None:
    chip = Chip(Faults())
    dp = DebugPort(chip)
    assert dp.read_dp(DP_IDR) == 0x2BA0_1477
    assert dp.read_dp(DP_CTRL_STAT) & POWER_UP_ACK == 0
    with pytest.raises(BusFault):
        dp.read_ap(AP_IDR)  # no AP access before power-up
    dp.write_dp(DP_ABORT, 1 << 2)  # STKERRCLR
    dp.write_dp(DP_CTRL_STAT, POWER_UP_REQ)
    assert dp.read_dp(DP_CTRL_STAT) & POWER_UP_ACK == POWER_UP_ACK
    assert dp.read_ap(AP_IDR) == 0x2477_0011


def test_ahb_ap_identity_and_absent_aps() -> None:
    dp = powered_port()
    assert dp.read_ap(AP_BASE) == 0xE00F_F003
    assert dp.read_ap(AP_CFG) == 0
    assert dp.read_ap(AP_CSW) & (1 << 6)  # DeviceEn
    for apsel in (1, 2, 3):
        assert dp.read_ap((apsel << 24) | AP_IDR) == 0


def test_tar_drw_word_access_with_auto_increment() -> None:
    dp = powered_port()
    dp.write_ap(AP_CSW, CSW_WORD_INC)
    dp.write_ap(AP_TAR, SRAM + 0x100)
    for value in (0x1111_1111, 0x2222_2222, 0x3333_3333):
        dp.write_ap(AP_DRW, value)
    assert dp.read_ap(AP_TAR) == SRAM + 0x10C
    assert dp.chip.bus_read_block(SRAM + 0x100, 12) == bytes.fromhex("11111111" "22222222" "33333333")
    dp.write_ap(AP_TAR, SRAM + 0x104)
    assert dp.read_ap(AP_DRW) == 0x2222_2222
    assert dp.read_dp(DP_RDBUFF) == 0x2222_2222


def test_tar_auto_increment_wraps_within_4kb() -> None:
    dp = powered_port()
    dp.write_ap(AP_CSW, CSW_WORD_INC)
    dp.write_ap(AP_TAR, SRAM + 0xFFC)
    dp.write_ap(AP_DRW, 0xAAAA_5555)
    assert dp.read_ap(AP_TAR) == SRAM


def test_byte_access_uses_the_byte_lane_of_the_address() -> None:
    dp = powered_port()
    dp.write_ap(AP_CSW, (CSW_WORD_INC & ~0x7) | 0)  # 8-bit
    dp.write_ap(AP_TAR, SRAM + 0x203)
    dp.write_ap(AP_DRW, 0xAB00_0000)  # byte lane 3
    assert dp.chip.bus_read(SRAM + 0x203, 1) == 0xAB
    dp.write_ap(AP_TAR, SRAM + 0x203)
    assert dp.read_ap(AP_DRW) == 0xAB00_0000


def test_banked_data_registers_address_the_tar_row() -> None:
    dp = powered_port()
    dp.write_ap(AP_TAR, SRAM + 0x300)
    dp.write_ap(AP_BD0 + 8, 0x1234_5678)
    assert dp.chip.bus_read(SRAM + 0x308, 4) == 0x1234_5678


def test_bus_error_sets_stickyerr_until_abort_clears_it() -> None:
    dp = powered_port()
    dp.write_ap(AP_CSW, CSW_WORD_INC)
    dp.write_ap(AP_TAR, 0x3000_0000)  # nothing there
    with pytest.raises(BusFault):
        dp.read_ap(AP_DRW)
    assert dp.read_dp(DP_CTRL_STAT) & STICKYERR
    with pytest.raises(BusFault):
        dp.read_ap(AP_IDR)
    dp.write_dp(DP_ABORT, 1 << 2)
    assert not dp.read_dp(DP_CTRL_STAT) & STICKYERR
    assert dp.read_ap(AP_IDR) == 0x2477_0011


def test_raw_ap_access_uses_select_for_apsel_and_bank() -> None:
    dp = powered_port()
    dp.write_dp(DP_SELECT, 0x0000_00F0)  # AP 0, bank 0xF
    assert dp.read_ap(0xC) == 0x2477_0011  # IDR at 0xFC
    dp.write_dp(DP_SELECT, 0x0100_00F0)  # AP 1
    assert dp.read_ap(0xC) == 0


# --- identity ---------------------------------------------------------------------------------------------
def test_cpuid_idcode_and_flash_size() -> None:
    chip = powered_port().chip
    assert chip.bus_read(CPUID, 4) == 0x410F_C241
    idcode = chip.bus_read(DBGMCU_IDCODE, 4)
    assert idcode & 0xFFF == 0x413
    assert idcode >> 16 == chip.part.rev_id
    assert chip.bus_read(0x1FFF_7A22, 2) == 512


def _pid(chip: Chip, base: int) -> int:
    b = [chip.bus_read(base + offset, 4) for offset in (0xFE0, 0xFE4, 0xFE8, 0xFEC, 0xFD0)]
    return b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24 | b[4] << 32


def _cid(chip: Chip, base: int) -> int:
    b = [chip.bus_read(base + offset, 4) for offset in (0xFF0, 0xFF4, 0xFF8, 0xFFC)]
    return b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24


def test_rom_table_lists_the_cortex_m4_components_with_their_ids() -> None:
    chip = powered_port().chip
    entries = []
    for offset in range(0, 0x40, 4):
        entry = chip.bus_read(ROM_TABLE_BASE + offset, 4)
        if entry == 0:
            break
        assert entry & 3 == 3  # present, 32-bit format
        entries.append((ROM_TABLE_BASE + (entry & 0xFFFF_F000)) & 0xFFFF_FFFF)
    assert entries == [0xE000_E000, 0xE000_1000, 0xE000_2000, 0xE000_0000, 0xE004_0000, 0xE004_1000]
    # ST's ROM table: JEP106 0x20 (continuation 0), part 0x413; a ROM table component class.
    pid = _pid(chip, ROM_TABLE_BASE)
    assert pid & 0xFFF == 0x413
    assert (pid >> 12) & 0x7F == 0x20 and (pid >> 32) & 0xF == 0
    assert _cid(chip, ROM_TABLE_BASE) == 0xB105_100D
    # ARM components (JEP106 0x3B, continuation 4): SCS 0x00C, DWT 0x002, FPB 0x003, ITM 0x001, TPIU 0x9A1, ETM 0x925.
    parts = {base: _pid(chip, base) & 0xFFF for base in entries}
    assert parts == {0xE000_E000: 0x00C, 0xE000_1000: 0x002, 0xE000_2000: 0x003, 0xE000_0000: 0x001,
                     0xE004_0000: 0x9A1, 0xE004_1000: 0x925}
    for base in entries:
        pid = _pid(chip, base)
        assert (pid >> 12) & 0x7F == 0x3B and (pid >> 32) & 0xF == 4


def test_a_clone_shows_a_different_revision_and_a_non_st_rom_table() -> None:
    chip = powered_port(Faults(clone=True)).chip
    assert chip.bus_read(DBGMCU_IDCODE, 4) & 0xFFF == 0x413  # it claims to be an F40x
    assert chip.bus_read(DBGMCU_IDCODE, 4) >> 16 != Chip(Faults()).part.rev_id
    assert (_pid(chip, ROM_TABLE_BASE) >> 12) & 0x7F != 0x20


def test_unmodelled_ppb_addresses_are_bus_errors() -> None:
    chip = powered_port().chip
    with pytest.raises(BusFault):
        chip.bus_read(0xE000_5000, 4)
    with pytest.raises(BusFault):
        chip.bus_read(0xE004_2010, 4)


# --- DHCSR, DCRSR/DCRDR, DEMCR ----------------------------------------------------------------------------
def test_dhcsr_writes_need_dbgkey() -> None:
    chip = powered_port().chip
    chip.bus_write(DHCSR, 4, C_DEBUGEN | C_HALT)  # no key
    assert not chip.bus_read(DHCSR, 4) & S_HALT
    chip.bus_write(DHCSR, 4, DBGKEY | C_DEBUGEN | C_HALT)
    status = chip.bus_read(DHCSR, 4)
    assert status & S_HALT and status & S_REGRDY and status & C_DEBUGEN
    assert chip.bus_read(DFSR, 4) & 1  # HALTED


def test_core_registers_move_through_dcrsr_and_dcrdr() -> None:
    dp = powered_port()
    chip = halted_on(dp, [B_SELF])
    chip.bus_write(DCRDR, 4, 0xCAFE_F00D)
    chip.bus_write(DCRSR, 4, REGWNR | 5)  # r5 <- DCRDR
    chip.bus_write(DCRDR, 4, 0)
    chip.bus_write(DCRSR, 4, 5)  # DCRDR <- r5
    assert chip.bus_read(DHCSR, 4) & S_REGRDY
    assert chip.bus_read(DCRDR, 4) == 0xCAFE_F00D
    chip.bus_write(DCRSR, 4, 15)
    assert chip.bus_read(DCRDR, 4) == SRAM
    chip.bus_write(DCRSR, 4, 16)
    assert chip.bus_read(DCRDR, 4) & (1 << 24)  # xPSR.T
    chip.bus_write(DCRDR, 4, 0x3F80_0000)  # 1.0f into S3
    chip.bus_write(DCRSR, 4, REGWNR | (64 + 3))
    chip.bus_write(DCRSR, 4, 64 + 3)
    assert chip.bus_read(DCRDR, 4) == 0x3F80_0000


def test_step_through_dhcsr_retires_one_instruction() -> None:
    dp = powered_port()
    chip = halted_on(dp, [MOVS_R0_1, ADDS_R0_1, B_SELF])
    chip.bus_read(DHCSR, 4)  # clear the sticky bits
    chip.bus_write(DHCSR, 4, DBGKEY | C_DEBUGEN | C_STEP)
    status = chip.bus_read(DHCSR, 4)
    assert status & S_HALT and status & S_RETIRE_ST
    chip.bus_write(DCRSR, 4, 15)
    assert chip.bus_read(DCRDR, 4) == SRAM + 2


def test_resume_through_dhcsr_runs_to_a_bkpt() -> None:
    dp = powered_port()
    chip = halted_on(dp, [MOVS_R0_1, ADDS_R0_1, BKPT])
    chip.bus_write(DFSR, 4, 0x1F)  # clear
    chip.bus_write(DHCSR, 4, DBGKEY | C_DEBUGEN)
    assert not chip.bus_read(DHCSR, 4) & S_HALT
    chip.advance(1 * PS_PER_US)
    assert chip.bus_read(DHCSR, 4) & S_HALT
    assert chip.bus_read(DFSR, 4) == DFSR_BKPT


def test_s_reset_st_is_set_by_a_reset_and_cleared_by_reading() -> None:
    chip = powered_port().chip
    chip.bus_read(DHCSR, 4)
    assert not chip.bus_read(DHCSR, 4) & S_RESET_ST
    chip.bus_write(0xE000_ED0C, 4, 0x05FA_0004)  # SYSRESETREQ
    assert chip.bus_read(DHCSR, 4) & S_RESET_ST
    assert not chip.bus_read(DHCSR, 4) & S_RESET_ST


def test_aircr_without_vectkey_is_ignored() -> None:
    chip = powered_port().chip
    chip.bus_write(0xE000_ED0C, 4, 0x0000_0004)
    assert chip.resets.get("sysresetreq", 0) == 0
    assert chip.bus_read(0xE000_ED0C, 4) >> 16 == 0xFA05


def test_demcr_survives_a_system_reset_but_not_power_on() -> None:
    chip = powered_port().chip
    chip.bus_write(DEMCR, 4, (1 << 24) | 1)
    chip.bus_write(0xE000_ED0C, 4, 0x05FA_0004)
    assert chip.bus_read(DEMCR, 4) == (1 << 24) | 1
    chip.power_on()
    assert chip.bus_read(DEMCR, 4) == 0


# --- DWT, FPB, DBGMCU --------------------------------------------------------------------------------------
def test_dwt_cyccnt_counts_16_mhz_cycles_while_the_core_runs() -> None:
    dp = powered_port()
    chip = halted_on(dp, [B_SELF])
    assert chip.bus_read(DWT_CTRL, 4) >> 28 == 4  # NUMCOMP
    chip.bus_write(DEMCR, 4, 1 << 24)  # TRCENA
    chip.bus_write(DWT_CYCCNT, 4, 0)
    chip.bus_write(DWT_CTRL, 4, 1)  # CYCCNTENA
    chip.advance(1 * PS_PER_MS)
    assert chip.bus_read(DWT_CYCCNT, 4) == 0  # halted: no cycles
    chip.bus_write(DHCSR, 4, DBGKEY | C_DEBUGEN)
    chip.advance(1 * PS_PER_MS)
    assert chip.bus_read(DWT_CYCCNT, 4) == 16_000


def test_enabled_fpb_comparator_halts_the_core_in_flash() -> None:
    chip = powered_port().chip
    code = thumb([MOVS_R0_1, ADDS_R0_1, ADDS_R0_1, ADDS_R0_1, B_SELF])
    vectors = struct.pack("<II", SRAM + 0x1000, 0x0800_0100 | 1)
    chip.load(0x0800_0000, vectors)
    chip.load(0x0800_0100, code)
    chip.bus_write(DHCSR, 4, DBGKEY | C_DEBUGEN)
    chip.bus_write(0xE000_2008 + 4, 4, 0x0800_0104 | (1 << 30) | 1)  # FP_COMP1: lower halfword, enabled
    chip.bus_write(0xE000_2000, 4, 0x3)  # FP_CTRL: KEY | ENABLE
    chip.bus_write(0xE000_ED0C, 4, 0x05FA_0004)  # reset: run from the vector
    chip.advance(10 * PS_PER_US)
    assert chip.halted and chip.dfsr & DFSR_BKPT
    assert chip.pc == 0x0800_0104 and chip.read_core_register(0) == 2
    chip.bus_write(DHCSR, 4, DBGKEY | C_DEBUGEN)  # resume past the breakpoint
    chip.advance(10 * PS_PER_US)
    assert chip.read_core_register(0) == 4


def test_fp_ctrl_reports_six_code_and_two_literal_comparators() -> None:
    chip = powered_port().chip
    fp_ctrl = chip.bus_read(0xE000_2000, 4)
    assert ((fp_ctrl >> 8) & 0x70) | ((fp_ctrl >> 4) & 0xF) == 6
    assert (fp_ctrl >> 8) & 0xF == 2


def test_dbgmcu_registers_hold_their_values() -> None:
    chip = powered_port().chip
    chip.bus_write(0xE004_2004, 4, 0x7)
    chip.bus_write(0xE004_2008, 4, 1 << 12)
    assert chip.bus_read(0xE004_2004, 4) == 0x7
    assert chip.bus_read(0xE004_2008, 4) == 1 << 12
    chip.bus_write(0xE000_ED0C, 4, 0x05FA_0004)  # a system reset keeps them (POR only)
    assert chip.bus_read(0xE004_2008, 4) == 1 << 12


def test_halting_freezes_nothing_without_dbgmcu_iwdg_stop() -> None:
    dp = powered_port(Faults(iwdg_timeout_ms=1))
    chip = dp.chip
    chip.bus_write(DHCSR, 4, DBGKEY | C_DEBUGEN | C_HALT)
    chip.advance(1500 * PS_PER_US)  # the application's 1 ms IWDG expires once (and restarts after the reset)
    assert chip.resets.get("iwdg", 0) == 1
    assert chip.bus_read(0x4002_3874, 4) & (1 << 29)  # IWDGRSTF
