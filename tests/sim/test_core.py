"""The virtual STM32F407's core: running for a time budget, halting, stepping, faults, resets, flash timing.

Programs are small Thumb sources assembled with the Debian `arm-none-eabi-as` (cached per source in the temp
directory). Each test builds its own `Chip`; time is virtual, so a 250 ms sector erase costs milliseconds.
"""
from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Optional, Tuple

import pytest

from f4load import protocol
from f4load.registers import (
    FLASH_CR,
    FLASH_CR_LOCK,
    FLASH_KEYR,
    FLASH_SR,
    FLASH_SR_BSY,
    FLASH_SR_PGSERR,
    RCC_CSR,
    RCC_CSR_IWDGRSTF,
    RCC_CSR_PINRSTF,
    RCC_CSR_PORRSTF,
    RCC_CSR_SFTRSTF,
)
from f4load.sim.chip import CYCLE_PS, Chip
from f4load.sim.clock import PS_PER_MS, PS_PER_US
from f4load.sim.debug import (
    CFSR_BFARVALID,
    CFSR_IBUSERR,
    CFSR_IMPRECISERR,
    CFSR_PRECISERR,
    DEMCR_VC_CORERESET,
    DEMCR_VC_HARDERR,
    DFSR_BKPT,
    DFSR_HALTED,
    DFSR_VCATCH,
)
from f4load.sim.faults import Faults
from f4load.sim.flash import BusFault
from f4load.stub_image import StubImage

SRAM = 0x2000_0000
FLASH = 0x0800_0000
STACK_TOP = 0x2001_0000
AIRCR = 0xE000_ED0C

# Assembler prelude: the register names the programs use.
PRELUDE = """
    .syntax unified
    .cpu cortex-m4
    .thumb
    .equ FLASH_KEYR, 0x40023C04
    .equ FLASH_SR,   0x40023C0C
    .equ FLASH_CR,   0x40023C10
    .equ IWDG_KR,    0x40003000
    .equ AIRCR,      0xE000ED0C
    .equ ACTLR,      0xE000E008
    .equ CCR,        0xE000ED14
    .equ DEMCR,      0xE000EDFC
    .equ DWT_CTRL,   0xE0001000
"""


def assemble(source: str, base: int) -> bytes:
    """Thumb code for `source` linked at `base` (arm-none-eabi-as/ld/objcopy, cached by content)."""
    text = PRELUDE + source
    key = hashlib.sha256(f"{base:#x}\n{text}".encode()).hexdigest()[:24]
    cache = Path(tempfile.gettempdir()) / "f4load-test-asm"
    cache.mkdir(exist_ok=True)
    binary = cache / f"{key}.bin"
    if not binary.exists():
        work = cache / key
        work.mkdir(exist_ok=True)
        (work / "p.s").write_text(text)
        subprocess.run(["arm-none-eabi-as", "-o", str(work / "p.o"), str(work / "p.s")], check=True)
        subprocess.run(["arm-none-eabi-ld", f"-Ttext={base:#x}", "-o", str(work / "p.elf"), str(work / "p.o")],
                       check=True, capture_output=True)
        subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(work / "p.elf"), str(work / "p.bin")],
                       check=True)
        (work / "p.bin").replace(binary)
    return binary.read_bytes()


def vector_table(reset: str = "reset", hardfault: str = "hardfault") -> str:
    """A flash image start: SP, reset and HardFault vectors (the other vectors point at HardFault)."""
    return f"""
    .word {STACK_TOP:#x}
    .word {reset} + 1
    .word {hardfault} + 1
    .word {hardfault} + 1
    .rept 12
    .word {hardfault} + 1
    .endr
"""


def new_chip(faults: Optional[Faults] = None, flash_program: Optional[str] = None) -> Chip:
    """A powered chip; with `flash_program` its image is in flash before power-on (so it runs from reset)."""
    faults = faults or Faults()
    chip = Chip(faults)
    if flash_program is not None:
        chip.load(FLASH, assemble(flash_program, FLASH))
    chip.power_on()
    return chip


def halted_chip_running_ram(source: str, faults: Optional[Faults] = None) -> Chip:
    """A chip with the debugger attached, halted, `source` loaded at SRAM and PC/SP pointing at it."""
    chip = new_chip(faults)
    chip.debugen = True
    chip.halt(DFSR_HALTED)
    chip.load(SRAM, assemble(source, SRAM))
    chip.write_core_register(15, SRAM)
    chip.write_core_register(13, STACK_TOP)
    chip.write_core_register(16, 1 << 24)
    return chip


def run_until_halted(chip: Chip, limit_ps: int = 10 * PS_PER_MS, step_ps: int = 10 * PS_PER_US) -> int:
    """Advance in small steps until the core halts; returns the virtual time it took."""
    start = chip.clock.now_ps
    while not chip.halted:
        assert chip.clock.now_ps - start < limit_ps, "core did not halt"
        chip.advance(step_ps)
    return chip.clock.now_ps - start


# --- halting, stepping, budget -------------------------------------------------------------------------------
def test_bkpt_halts_with_dfsr_bkpt_and_pc_on_the_bkpt() -> None:
    chip = halted_chip_running_ram("""
        movs r0, #7
        movs r1, #8
    stop:
        bkpt #0
    """)
    chip.dfsr = 0
    chip.resume()
    chip.advance(1 * PS_PER_US)
    assert chip.halted
    assert chip.dfsr & DFSR_BKPT
    assert chip.pc == SRAM + 4
    assert chip.read_core_register(0) == 7 and chip.read_core_register(1) == 8


def test_bkpt_without_debugger_is_a_hardfault() -> None:
    chip = new_chip(flash_program=vector_table() + """
    reset:
        bkpt #0
    hardfault:
        movs r7, #0x55
        b hardfault
    """)
    chip.advance(2 * PS_PER_US)
    assert not chip.halted
    assert chip.read_core_register(7) == 0x55
    assert chip.scs.hfsr & (1 << 31)  # DEBUGEVT


def test_single_step_executes_exactly_one_instruction() -> None:
    chip = halted_chip_running_ram("""
        movs r0, #1
        ldr r1, =0x12345678
        adds r0, #1
        b .
    """)
    before = chip.clock.now_ps
    chip.step()
    assert chip.halted and chip.pc == SRAM + 2 and chip.read_core_register(0) == 1
    chip.step()  # a 16-bit literal load
    assert chip.pc == SRAM + 4 and chip.read_core_register(1) == 0x1234_5678
    chip.step()
    assert chip.pc == SRAM + 6 and chip.read_core_register(0) == 2
    assert chip.clock.now_ps == before  # stepping runs no virtual time
    assert chip.dfsr & DFSR_HALTED


def test_advance_runs_sixteen_instructions_per_microsecond() -> None:
    chip = halted_chip_running_ram("""
        movs r0, #0
    loop:
        adds r0, #1
        b loop
    """)
    chip.step()  # movs: from here on, every block is the 2-instruction loop
    chip.resume()
    before = chip.instructions
    chip.advance(100 * PS_PER_US)
    assert chip.instructions - before == 100 * 16
    assert chip.read_core_register(0) == 100 * 8
    chip.advance(37 * PS_PER_US)  # the budget carries across calls without drift
    assert chip.read_core_register(0) == 137 * 8


def test_a_halted_core_runs_no_instructions_while_time_passes() -> None:
    chip = halted_chip_running_ram("loop: b loop")
    chip.advance(5 * PS_PER_MS)
    assert chip.instructions == 0
    assert chip.clock.now_ps == 5 * PS_PER_MS


def test_code_the_debugger_rewrites_in_ram_runs_in_its_new_form() -> None:
    chip = halted_chip_running_ram("""
        movs r0, #1
        bkpt #0
    """)
    chip.resume()
    chip.advance(PS_PER_US)
    assert chip.read_core_register(0) == 1
    chip.bus_write(SRAM, 2, 0x2005)  # movs r0, #5
    chip.write_core_register(15, SRAM)
    chip.resume()
    chip.advance(PS_PER_US)
    assert chip.halted and chip.read_core_register(0) == 5


# --- flash through the FLASH registers ------------------------------------------------------------------
PROGRAM_ONE_WORD = """
        ldr r0, =FLASH_KEYR
        ldr r1, =0x45670123
        str r1, [r0]
        ldr r1, =0xCDEF89AB
        str r1, [r0]
        ldr r0, =FLASH_CR
        ldr r1, =0x201          @ PG, PSIZE x32
        str r1, [r0]
        ldr r2, =0x08004000
        ldr r3, =0xA5A5F00F
        str r3, [r2]            @ the program write starts here
        ldr r0, =FLASH_SR
    wait:
        ldr r1, [r0]
        lsrs r1, r1, #17        @ BSY (bit 16) -> carry
        bcs wait
        bkpt #0
"""


def test_core_programs_a_flash_word_and_its_bsy_poll_ends_at_the_ds8626_time() -> None:
    chip = halted_chip_running_ram(PROGRAM_ONE_WORD)
    chip.resume()
    took = run_until_halted(chip, step_ps=1 * PS_PER_MS)
    assert chip.dfsr & DFSR_BKPT
    assert chip.bus_read(0x0800_4000, 4) == 0xA5A5_F00F
    assert chip.bus_read(FLASH_SR, 4) == 0  # BSY clear, no error flags
    # 16 us typical program time (DS8626 Table 40) plus a handful of instructions, however long we advanced.
    assert 16 * PS_PER_US <= took <= 1 * PS_PER_MS
    assert chip.poll_skips >= 1
    assert chip.instructions < 100  # the poll loop idled instead of spinning 256 times


def test_bsy_poll_ends_exactly_when_the_operation_ends() -> None:
    chip = halted_chip_running_ram(PROGRAM_ONE_WORD)
    chip.resume()
    chip.advance(2 * PS_PER_US)  # the program write has started
    assert chip.flash.busy
    ends = chip.flash.next_event_ps()
    assert ends is not None
    while not chip.halted:
        chip.advance(CYCLE_PS)
    # The BKPT retires within a few cycles of the end of the program operation.
    assert ends <= chip.clock.now_ps <= ends + 10 * CYCLE_PS


def test_core_store_into_flash_without_pg_leaves_flash_unchanged_and_sets_pgserr() -> None:
    chip = halted_chip_running_ram("""
        ldr r2, =0x08000100
        ldr r3, =0x12345678
        str r3, [r2]
        ldr r4, [r2]
        bkpt #0
    """)
    chip.resume()
    chip.advance(10 * PS_PER_US)
    assert chip.halted
    assert chip.bus_read(0x0800_0100, 4) == 0xFFFF_FFFF
    assert chip.read_core_register(4) == 0xFFFF_FFFF
    assert chip.bus_read(FLASH_SR, 4) & FLASH_SR_PGSERR


def test_wrong_flash_key_is_a_bus_error_hardfault_and_locks_cr() -> None:
    chip = new_chip(flash_program=vector_table() + """
    reset:
        ldr r0, =FLASH_KEYR
        ldr r1, =0x11111111
        str r1, [r0]
        b .
    hardfault:
        movs r7, #0x42
        b hardfault
    """)
    chip.advance(5 * PS_PER_US)
    assert chip.read_core_register(7) == 0x42
    assert chip.scs.cfsr & CFSR_IMPRECISERR
    assert chip.bus_read(FLASH_CR, 4) & FLASH_CR_LOCK


ERASE_SECTOR_1_WHILE_REFRESHING = """
        ldr r0, =FLASH_KEYR
        ldr r1, =0x45670123
        str r1, [r0]
        ldr r1, =0xCDEF89AB
        str r1, [r0]
        ldr r0, =FLASH_CR
        ldr r1, =0x1020A        @ STRT, PSIZE x32, SNB 1, SER
        str r1, [r0]
        ldr r0, =FLASH_SR
        ldr r2, =IWDG_KR
        ldr r3, =0xAAAA
    wait:
        str r3, [r2]            @ refresh the watchdog
        ldr r1, [r0]
        lsrs r1, r1, #17
        bcs wait
        bkpt #0
"""


def test_bsy_poll_that_refreshes_the_iwdg_survives_a_long_erase() -> None:
    # The application started the IWDG with 10 ms; the 250 ms erase is polled in skips of at most 2.5 ms.
    chip = halted_chip_running_ram(ERASE_SECTOR_1_WHILE_REFRESHING, Faults(iwdg_timeout_ms=10))
    chip.resume()
    took = run_until_halted(chip, limit_ps=400 * PS_PER_MS, step_ps=1 * PS_PER_MS)
    assert chip.resets.get("iwdg", 0) == 0
    assert chip.dfsr & DFSR_BKPT
    assert 250 * PS_PER_MS <= took <= 270 * PS_PER_MS


BSY_POLL_WITH_CYCCNT_TIMEOUT = """
        ldr r0, =FLASH_KEYR
        ldr r1, =0x45670123
        str r1, [r0]
        ldr r1, =0xCDEF89AB
        str r1, [r0]
        ldr r0, =DEMCR
        ldr r1, =0x01000000     @ TRCENA
        str r1, [r0]
        ldr r2, =DWT_CTRL
        movs r1, #1             @ CYCCNTENA
        str r1, [r2]
        ldr r4, [r2, #4]        @ CYCCNT at the start
        ldr r5, =16000000       @ timeout: one second of 16 MHz cycles
        ldr r0, =FLASH_CR
        ldr r1, =0x1020A        @ STRT, PSIZE x32, SNB 1, SER
        str r1, [r0]
        ldr r0, =FLASH_SR
    wait:
        ldr r1, [r0]
        lsrs r1, r1, #17        @ BSY (bit 16) -> carry
        bcc done
        ldr r3, [r2, #4]        @ CYCCNT
        subs r3, r3, r4
        cmp r3, r5
        blo wait
        movs r7, #1             @ timed out
        bkpt #0
    done:
        movs r7, #2             @ BSY cleared
        bkpt #0
"""


def test_bsy_poll_loop_with_a_cyccnt_timeout_times_out_when_bsy_is_stuck() -> None:
    # Reading FLASH_SR while BSY=1 does not stall on silicon, so the loop's own timeout must fire.
    chip = halted_chip_running_ram(BSY_POLL_WITH_CYCCNT_TIMEOUT, Faults(bsy_stuck=True))
    chip.resume()
    start = chip.clock.now_ps
    assert chip.run_until_halted(10 * 1000 * PS_PER_MS)
    took = chip.clock.now_ps - start
    assert chip.read_core_register(7) == 1
    assert chip.bus_read(FLASH_SR, 4) & FLASH_SR_BSY
    # Polls of a stuck BSY skip at most 1/16 of the time polled so far, so the timeout is seen at most 1/16
    # late, after a few dozen polls rather than 31,000.
    assert 1000 * PS_PER_MS <= took <= 1000 * PS_PER_MS * 17 // 16
    assert chip.poll_skips < 200


def test_bsy_poll_loop_with_a_cyccnt_timeout_sees_a_normal_erase_end() -> None:
    chip = halted_chip_running_ram(BSY_POLL_WITH_CYCCNT_TIMEOUT)
    chip.resume()
    start = chip.clock.now_ps
    assert chip.run_until_halted(10 * 1000 * PS_PER_MS)
    assert chip.read_core_register(7) == 2
    assert 250 * PS_PER_MS <= chip.clock.now_ps - start <= 251 * PS_PER_MS  # 16 KB at x32: 250 ms typical


# Sector 5 (128 KB, 1 s typical at x32) against a 10 ms timeout (160,000 cycles at 16 MHz).
SHORT_TIMEOUT_AGAINST_A_1_S_ERASE = BSY_POLL_WITH_CYCCNT_TIMEOUT.replace(
    "ldr r5, =16000000       @ timeout: one second of 16 MHz cycles", "ldr r5, =160000").replace(
    "ldr r1, =0x1020A        @ STRT, PSIZE x32, SNB 1, SER", "ldr r1, =0x1022A        @ STRT, PSIZE x32, SNB 5, SER")


@pytest.mark.parametrize("step_ps", [None, 100 * PS_PER_US, 7 * PS_PER_MS], ids=["until-halted", "100us", "7ms"])
def test_a_poll_loop_timeout_shorter_than_the_erase_fires_whatever_the_callers_step(step_ps: Optional[int]) -> None:
    # Poll skipping jumps at most 1/16 of the time polled so far, so the loop sees its 10 ms timeout expire
    # with BSY still set, at most 1/16 late, however the host advances time.
    chip = halted_chip_running_ram(SHORT_TIMEOUT_AGAINST_A_1_S_ERASE)
    chip.resume()
    start = chip.clock.now_ps
    if step_ps is None:
        assert chip.run_until_halted(2000 * PS_PER_MS)
    else:
        run_until_halted(chip, limit_ps=2000 * PS_PER_MS, step_ps=step_ps)
    took = chip.clock.now_ps - start
    assert chip.read_core_register(7) == 1  # timed out
    assert chip.bus_read(FLASH_SR, 4) & FLASH_SR_BSY  # the erase goes on
    assert 10 * PS_PER_MS <= took <= 10 * PS_PER_MS * 17 // 16 + (step_ps or 0)
    # 1 ms jumps at first (then 1/16 of the time polled), plus one cut at the end of each caller step.
    assert chip.poll_skips <= 12 + (10 * PS_PER_MS // step_ps if step_ps else 0)


def test_a_poll_loop_waiting_out_a_1_s_erase_needs_few_jumps() -> None:
    source = SHORT_TIMEOUT_AGAINST_A_1_S_ERASE.replace("ldr r5, =160000", "ldr r5, =48000000")  # 3 s
    chip = halted_chip_running_ram(source)
    chip.resume()
    start = chip.clock.now_ps
    assert chip.run_until_halted(5000 * PS_PER_MS)
    assert chip.read_core_register(7) == 2  # BSY cleared before the 3 s timeout
    assert 1000 * PS_PER_MS <= chip.clock.now_ps - start <= 1001 * PS_PER_MS
    assert chip.poll_skips < 120


def test_a_single_sr_read_during_an_erase_takes_no_time() -> None:
    # Only a loop (the same code reading SR with BSY set again) is skipped ahead; one read is just a read.
    chip = halted_chip_running_ram("""
        ldr r0, =FLASH_KEYR
        ldr r1, =0x45670123
        str r1, [r0]
        ldr r1, =0xCDEF89AB
        str r1, [r0]
        ldr r0, =FLASH_CR
        ldr r1, =0x1020A        @ STRT, PSIZE x32, SNB 1, SER
        str r1, [r0]
        ldr r0, =FLASH_SR
        ldr r1, [r0]
        bkpt #0
    """)
    chip.resume()
    start = chip.clock.now_ps
    assert chip.run_until_halted(1 * PS_PER_MS)
    assert chip.read_core_register(1) & FLASH_SR_BSY
    assert chip.clock.now_ps - start < 1 * PS_PER_US
    assert chip.poll_skips == 0


# --- IWDG ------------------------------------------------------------------------------------------------
def test_iwdg_expiry_resets_the_chip_when_the_application_does_not_refresh() -> None:
    chip = new_chip(Faults(iwdg_timeout_ms=2), flash_program=vector_table() + """
    reset:
        b reset
    hardfault:
        b hardfault
    """)
    chip.advance(1 * PS_PER_MS)
    assert chip.resets.get("iwdg", 0) == 0
    chip.advance(2 * PS_PER_MS)
    assert chip.resets["iwdg"] == 1
    assert chip.bus_read(RCC_CSR, 4) & RCC_CSR_IWDGRSTF


def test_iwdg_does_not_reset_an_application_that_refreshes_it() -> None:
    chip = new_chip(Faults(iwdg_timeout_ms=2), flash_program=vector_table() + """
    reset:
        ldr r0, =IWDG_KR
        ldr r1, =0xAAAA
    loop:
        str r1, [r0]
        b loop
    hardfault:
        b hardfault
    """)
    chip.advance(10 * PS_PER_MS)
    assert chip.resets.get("iwdg", 0) == 0
    assert not chip.bus_read(RCC_CSR, 4) & RCC_CSR_IWDGRSTF


def test_iwdg_frozen_by_dbgmcu_does_not_count_while_halted() -> None:
    chip = new_chip(Faults(iwdg_timeout_ms=2))
    chip.debugen = True
    chip.bus_write(0xE004_2008, 4, 1 << 12)  # DBGMCU_APB1_FZ.DBG_IWDG_STOP
    chip.halt(DFSR_HALTED)
    chip.advance(50 * PS_PER_MS)
    assert chip.resets.get("iwdg", 0) == 0
    chip.resume()
    chip.advance(3 * PS_PER_MS)
    assert chip.resets["iwdg"] == 1


# --- resets and vector catch ----------------------------------------------------------------------------
def test_vc_corereset_halts_on_the_reset_vector_before_the_first_instruction() -> None:
    chip = new_chip(flash_program=vector_table() + """
    reset:
        movs r0, #1
        b reset
    hardfault:
        b hardfault
    """)
    chip.debugen = True
    chip.demcr = DEMCR_VC_CORERESET
    chip.dfsr = 0
    chip.bus_write(AIRCR, 4, 0x05FA_0004)  # SYSRESETREQ from the debugger
    assert chip.halted
    assert chip.dfsr & DFSR_VCATCH
    reset_handler = chip.bus_read(FLASH + 4, 4) & ~1
    assert chip.pc == reset_handler
    assert chip.read_core_register(13) == STACK_TOP
    before = chip.instructions
    chip.advance(1 * PS_PER_MS)
    assert chip.instructions == before  # still halted


def test_sysresetreq_by_the_core_sets_sftrstf() -> None:
    chip = new_chip(flash_program=vector_table() + """
    reset:
        ldr r0, =AIRCR
        ldr r1, =0x05FA0004
        str r1, [r0]
        b .
    hardfault:
        b hardfault
    """)
    chip.bus_write(RCC_CSR, 4, 1 << 24)  # RMVF: clear the power-on flags first
    chip.advance(2 * PS_PER_US)
    assert chip.resets.get("sysresetreq", 0) >= 1
    assert chip.bus_read(RCC_CSR, 4) & RCC_CSR_SFTRSTF


def test_power_on_sets_porrstf_and_the_reset_flag_is_sticky_in_dhcsr() -> None:
    chip = new_chip()
    assert chip.bus_read(RCC_CSR, 4) & RCC_CSR_PORRSTF
    assert chip.bus_read(0xE000_EDF0, 4) & (1 << 25)  # S_RESET_ST
    assert not chip.bus_read(0xE000_EDF0, 4) & (1 << 25)  # cleared by the read


def test_erased_flash_locks_the_core_up() -> None:
    chip = new_chip()
    assert chip.pc == 0xFFFF_FFFE
    chip.advance(10 * PS_PER_US)
    assert chip.lockup
    assert chip.bus_read(0xE000_EDF0, 4) & (1 << 19)  # S_LOCKUP


def test_a_hardfault_vector_that_is_not_executable_locks_up_after_the_exception_entry() -> None:
    # HardFault's vector points into CCM RAM (data bus only): the entry completes (frame pushed, IPSR = 3,
    # LR = EXC_RETURN) and the core then locks up fetching the handler, as on silicon.
    chip = new_chip(flash_program=vector_table(hardfault="0x10000000") + """
    reset:
        movs r0, #0x42
        udf #0
    """)
    chip.advance(10 * PS_PER_US)
    assert chip.lockup
    assert chip.active_exception == 3
    assert chip.read_core_register(16) & 0x1FF == 3  # xPSR.IPSR = HardFault
    assert chip.read_core_register(14) == 0xFFFF_FFF9  # EXC_RETURN: thread mode, main stack
    frame = chip.bus_read_block(STACK_TOP - 32, 32)
    assert int.from_bytes(frame[0:4], "little") == 0x42  # stacked r0
    assert chip.pc == 0xFFFF_FFFE


def test_nrst_holds_the_core_and_release_with_vector_catch_halts_at_reset() -> None:
    chip = new_chip(flash_program=vector_table() + """
    reset:
        b reset
    hardfault:
        b hardfault
    """)
    chip.debugen = True
    chip.nrst_asserted = True
    chip.demcr = DEMCR_VC_CORERESET
    before = chip.instructions
    chip.advance(1 * PS_PER_MS)
    assert chip.instructions == before
    assert chip.bus_read(RCC_CSR, 4) & RCC_CSR_PINRSTF
    chip.nrst_asserted = False
    assert chip.halted and chip.dfsr & DFSR_VCATCH


def test_connect_under_reset_keeps_the_application_from_running() -> None:
    # The application would lock FLASH_CR with a bad key; halting before it runs keeps CR unlockable.
    chip = new_chip(Faults(cr_locked_by_bad_key=True))
    chip.debugen = True
    chip.nrst_asserted = True
    chip.demcr = DEMCR_VC_CORERESET
    chip.nrst_asserted = False
    assert chip.halted
    chip.bus_write(0x4002_3C04, 4, 0x4567_0123)
    chip.bus_write(0x4002_3C04, 4, 0xCDEF_89AB)
    assert not chip.bus_read(FLASH_CR, 4) & FLASH_CR_LOCK


# --- core faults ----------------------------------------------------------------------------------------
WRONG_KEY_WITH_FAULTMASK = """
        ldr r0, =ACTLR
        movs r1, #2             @ DISDEFWBUF: the store's bus fault is precise
        str r1, [r0]
        ldr r0, =CCR
        ldr r1, [r0]
        orr r1, r1, #{bfhfnmign}
        str r1, [r0]
        cpsid f
        ldr r0, =FLASH_KEYR
        ldr r1, =0x11111111
        str r1, [r0]            @ a wrong key: the flash interface answers with a bus error
        cpsie f
        movs r7, #0x77
        bkpt #0
"""


def test_wrong_key_under_faultmask_and_bfhfnmign_is_recorded_and_execution_goes_on() -> None:
    chip = halted_chip_running_ram(WRONG_KEY_WITH_FAULTMASK.format(bfhfnmign="0x100"))
    chip.resume()
    assert chip.run_until_halted(1 * PS_PER_MS)
    assert chip.read_core_register(7) == 0x77 and chip.active_exception == 0 and chip.dfsr & DFSR_BKPT
    assert chip.scs.cfsr == CFSR_PRECISERR | CFSR_BFARVALID
    assert chip.scs.bfar == FLASH_KEYR
    assert chip.bus_read(FLASH_CR, 4) & FLASH_CR_LOCK


def test_wrong_key_under_faultmask_without_bfhfnmign_locks_the_core_up() -> None:
    # ARMv7-M B1.5.15: a synchronous fault at execution priority -1 cannot be taken.
    chip = halted_chip_running_ram(WRONG_KEY_WITH_FAULTMASK.format(bfhfnmign="0"))
    chip.resume()
    chip.advance(1 * PS_PER_MS)
    assert chip.lockup and not chip.halted
    assert chip.read_core_register(7) != 0x77
    assert chip.scs.cfsr & CFSR_PRECISERR and chip.scs.bfar == FLASH_KEYR


def test_executing_ccm_takes_a_hardfault_that_vc_harderr_catches() -> None:
    chip = new_chip(flash_program=vector_table() + """
    reset:
        ldr r0, =0x10000001
        bx r0
    hardfault:
        b hardfault
    """)
    chip.debugen = True
    chip.demcr = DEMCR_VC_HARDERR
    chip.dfsr = 0
    chip.advance(5 * PS_PER_US)
    assert chip.halted and chip.dfsr & DFSR_VCATCH
    assert chip.scs.cfsr & CFSR_IBUSERR
    hardfault_handler = chip.bus_read(FLASH + 12, 4) & ~1
    assert chip.pc == hardfault_handler
    sp = chip.read_core_register(13)
    assert chip.bus_read(sp + 24, 4) == 0x1000_0000  # stacked return address: the CCM instruction
    assert chip.read_core_register(14) == 0xFFFF_FFF9


def test_hardfault_handler_returns_through_exc_return() -> None:
    chip = new_chip(flash_program=vector_table() + """
    reset:
        movs r5, #3
        udf #0
        adds r5, #1             @ never reached: the handler skips the UDF and returns here + 2
        bkpt #0
    hardfault:
        ldr r1, [sp, #24]       @ stacked PC: the UDF
        adds r1, #4             @ skip UDF and the adds
        str r1, [sp, #24]
        bx lr
    """)
    chip.debugen = True
    chip.advance(5 * PS_PER_US)
    assert chip.halted and chip.dfsr & DFSR_BKPT
    assert chip.read_core_register(5) == 3
    assert chip.active_exception == 0
    assert chip.read_core_register(13) == STACK_TOP


def test_ram_polling_loop_idles_until_the_debugger_writes_the_flag() -> None:
    chip = halted_chip_running_ram("""
        ldr r0, =flag
    wait:
        ldr r1, [r0]
        cmp r1, #0
        beq wait
        bkpt #0
        .align 2
    flag:
        .word 0
    """)
    flag = SRAM + len(assemble("""
        ldr r0, =flag
    wait:
        ldr r1, [r0]
        cmp r1, #0
        beq wait
        bkpt #0
        .align 2
    flag:
        .word 0
    """, SRAM)) - 8
    assert chip.bus_read(flag, 4) == 0
    chip.resume()
    chip.advance(10 * PS_PER_MS)
    assert not chip.halted
    assert chip.idle_loops >= 1
    assert chip.instructions < 2000  # 160,000 instructions' worth of time passed without running them
    chip.bus_write(flag, 4, 1)
    chip.advance(1 * PS_PER_US)
    assert chip.halted


def test_wfi_sleeps_until_the_debugger_halts() -> None:
    chip = halted_chip_running_ram("""
        wfi
        movs r0, #9
        b .
    """)
    chip.resume()
    chip.advance(100 * PS_PER_US)
    assert chip.sleeping
    assert chip.bus_read(0xE000_EDF0, 4) & (1 << 18)  # S_SLEEP
    assert chip.read_core_register(0) == 0
    chip.halt(DFSR_HALTED)
    assert not chip.sleeping and chip.pc == SRAM + 2


@pytest.mark.parametrize("flash_kb", [512, 1024])
def test_f_size_and_flash_mapping_follow_the_part(flash_kb: int) -> None:
    from f4load.sim.state import ChipState

    faults = Faults(flash_kb=flash_kb)
    chip = Chip(faults, ChipState.factory_new(faults))
    chip.power_on()
    assert chip.bus_read(0x1FFF_7A22, 2) == flash_kb
    assert chip.bus_read(FLASH + flash_kb * 1024 - 4, 4) == 0xFFFF_FFFF


# --- option-byte faults, reset faults, system areas ---------------------------------------------------------
def test_rdp_level1_blocks_flash_for_the_debugger_and_the_core() -> None:
    chip = new_chip(Faults(rdp_level1=True), flash_program=vector_table() + """
    reset:
        movs r6, #1
        b reset
    hardfault:
        b hardfault
    """)
    chip.apply_option_faults()
    chip.flash.debugger_attached = True
    with pytest.raises(BusFault):
        chip.bus_read(FLASH, 4)
    with pytest.raises(BusFault):
        chip.bus_read_block(FLASH, 64)
    chip.reset("pin")  # the core cannot fetch its reset vector with the debugger attached (RM0090 3.7.3)
    chip.advance(10 * PS_PER_US)
    assert chip.lockup and chip.read_core_register(6) == 0
    chip.flash.debugger_attached = False
    chip.reset("pin")
    chip.advance(10 * PS_PER_US)
    assert not chip.lockup and chip.read_core_register(6) == 1


def test_hardware_watchdog_option_starts_the_iwdg_at_every_reset() -> None:
    chip = new_chip(Faults(hardware_watchdog=True))
    chip.apply_option_faults()
    chip.reset("pin")
    assert chip.iwdg.running
    chip.advance(600 * PS_PER_MS)  # reset values: /4, 0xFFF -> 512 ms
    assert chip.resets.get("iwdg", 0) == 1


def test_reset_during_the_middle_of_an_erase_cuts_it_at_half_time() -> None:
    from f4load.sim.faults import ResetDuring

    faults = Faults(reset_during=[ResetDuring("erase", 1, "middle", "brownout")])
    chip = halted_chip_running_ram(ERASE_SECTOR_1_WHILE_REFRESHING, faults)
    chip.load(0x0800_4000, b"\x00" * 0x4000)  # sector 1 fully programmed
    chip.resume()
    chip.advance(100 * PS_PER_MS)
    assert not chip.resets.get("brownout")
    chip.advance(50 * PS_PER_MS)
    assert chip.resets["brownout"] == 1
    csr = chip.bus_read(RCC_CSR, 4)
    assert csr & RCC_CSR_PORRSTF and csr & (1 << 25)  # PORRSTF and BORRSTF
    assert not chip.debugen  # a brown-out resets the debug domain too
    assert chip.bus_read(0x0800_4000, 4) == 0xFFFF_FFFF  # the first half was erased
    assert chip.bus_read(0x0800_7FFC, 4) == 0


def test_unique_id_option_bytes_and_system_memory_are_readable() -> None:
    from f4load.sim.state import ChipState

    state = ChipState.factory_new()
    state.unique_id = bytes(range(1, 13))
    chip = Chip(Faults(), state)
    chip.power_on()
    assert chip.bus_read_block(0x1FFF_7A10, 12) == bytes(range(1, 13))
    assert chip.bus_read(0x1FFF_C000, 2) == 0xAAEC  # RDP level 0, factory USER bits
    assert chip.bus_read(0x1FFF_C008, 2) == 0x0FFF  # no sector write-protected
    assert chip.bus_read(0x1FFF_0004, 4) & 1  # the stand-in bootloader has a Thumb reset vector


def test_core_programs_otp_through_the_flash_interface() -> None:
    chip = halted_chip_running_ram("""
        ldr r0, =FLASH_KEYR
        ldr r1, =0x45670123
        str r1, [r0]
        ldr r1, =0xCDEF89AB
        str r1, [r0]
        ldr r0, =FLASH_CR
        ldr r1, =0x201
        str r1, [r0]
        ldr r2, =0x1FFF7800
        ldr r3, =0x600DF00D
        str r3, [r2]
        ldr r0, =FLASH_SR
    wait:
        ldr r1, [r0]
        lsrs r1, r1, #17
        bcs wait
        bkpt #0
    """)
    chip.resume()
    run_until_halted(chip)
    assert chip.bus_read(0x1FFF_7800, 4) == 0x600D_F00D
    assert chip.options.otp[0:4] == bytes.fromhex("0df00d60")


def test_debugger_programs_flash_word_by_word_and_waits_for_each_write() -> None:
    chip = new_chip()
    chip.bus_write(0x4002_3C04, 4, 0x4567_0123)
    chip.bus_write(0x4002_3C04, 4, 0xCDEF_89AB)
    chip.bus_write(FLASH_CR, 4, 0x201)
    start = chip.clock.now_ps
    chip.bus_write_block(0x0800_8000, bytes(range(16)))
    # Each word waits for the previous one: three 16 us programs have passed, the fourth is running.
    assert chip.clock.now_ps - start == 3 * 16 * PS_PER_US and chip.flash.busy
    # A read of flash waits for the fourth (one bank), then sees all four words.
    assert chip.bus_read_block(0x0800_8000, 16) == bytes(range(16))
    assert chip.clock.now_ps - start == 4 * 16 * PS_PER_US


def test_probe_style_pin_reset_then_nrst_hold_is_one_reset_and_the_application_does_not_run() -> None:
    # The probe plugin calls reset("pin") and then sets nrst_asserted at the same instant.
    chip = new_chip(Faults(iwdg_timeout_ms=5, sticky_sr=FLASH_SR_PGSERR))
    chip.reset("pin")
    chip.nrst_asserted = True
    assert chip.resets["pin"] == 1
    assert not chip.iwdg.running  # held in reset: the application has not started the IWDG
    assert chip.bus_read(FLASH_SR, 4) == 0
    chip.nrst_asserted = False  # no vector catch: the application runs
    assert chip.iwdg.running and chip.bus_read(FLASH_SR, 4) & FLASH_SR_PGSERR


# --- the f4load stub on the chip -----------------------------------------------------------------------------
STUB_LOAD = 0x2000_0004
STUB_HALT = 0x2001_F000  # LR points here: a BKPT word, as pyocd sets it up
STUB_STACK = 0x2001_E000


def stub_on_chip(faults: Faults) -> Tuple[Chip, Callable[..., int], Callable[[], protocol.ErrorRecord]]:
    """The shipped stub (f4load_stub.FLM) loaded into a halted, powered chip, and `call(name, *args)` that runs
    one entry point the way a debugger does (see tests/test_stub_build.py), in a single `run_until_halted`."""
    image = StubImage.shipped()
    chip = new_chip(faults)
    chip.debugen = True
    chip.halt(DFSR_HALTED)
    chip.load(STUB_HALT, protocol.const("F4LOAD_HALT_WORD").to_bytes(4, "little"))
    chip.load(STUB_LOAD, image.image)

    def call(name: str, *args: int) -> int:
        for regsel, value in enumerate(args):
            chip.write_core_register(regsel, value)
        chip.write_core_register(13, STUB_STACK)
        chip.write_core_register(14, STUB_HALT | 1)
        chip.write_core_register(16, 1 << 24)
        chip.write_core_register(15, image.entry_address(STUB_LOAD, name))
        chip.resume()
        assert chip.run_until_halted(60 * 1000 * PS_PER_MS), f"{name} did not return"
        assert chip.pc == STUB_HALT, f"{name} stopped at {chip.pc:#x}"
        return chip.read_core_register(0)

    def record() -> protocol.ErrorRecord:
        data = chip.bus_read_block(STUB_LOAD + image.error_offset, protocol.ErrorRecord.SIZE)
        return protocol.ErrorRecord.from_bytes(data)

    return chip, call, record


def test_stub_erase_sector_reports_a_bsy_timeout_when_bsy_is_stuck() -> None:
    chip, call, record = stub_on_chip(Faults(bsy_stuck=True))
    assert call("Init", FLASH, 0, 1) == 0
    start = chip.clock.now_ps
    result = protocol.ResultCode.decode(call("EraseSector", FLASH))
    assert (result.kind, result.op, result.sector) == (protocol.const("F4LOAD_KIND_BSY_TIMEOUT"),
                                                       protocol.const("F4LOAD_OP_ERASE_SECTOR"), 0)
    error = record()
    assert error.sr & FLASH_SR_BSY
    # The stub gives up after twice the DS8626 maximum (500 ms for 16 KB at x32), seen at most 1/16 late.
    assert 1000 <= error.waited_ms <= 1000 * 17 // 16
    assert chip.clock.now_ps - start <= 1100 * PS_PER_MS


def test_stub_init_reports_cr_locked_by_a_bad_key_with_the_ignored_bus_fault() -> None:
    # The application wrote a wrong key: every KEYR write is a bus error until reset. The stub writes the keys
    # with FAULTMASK, CCR.BFHFNMIGN and ACTLR.DISDEFWBUF, so the faults are recorded instead of taken.
    chip, call, record = stub_on_chip(Faults(cr_locked_by_bad_key=True))
    result = protocol.ResultCode.decode(call("Init", FLASH, 0, 1))
    assert (result.kind, result.op) == (protocol.const("F4LOAD_KIND_LOCKED"), protocol.const("F4LOAD_OP_INIT"))
    error = record()
    assert error.cfsr & (CFSR_PRECISERR | CFSR_BFARVALID) == CFSR_PRECISERR | CFSR_BFARVALID
    assert error.address == FLASH_KEYR
    assert not chip.lockup and chip.active_exception == 0
    assert chip.scs.bfar == FLASH_KEYR


# --- debugger reads of a busy flash ------------------------------------------------------------------------
def _debugger_starts_erase_of_sector_1(chip: Chip) -> None:
    chip.bus_write(FLASH_KEYR, 4, 0x4567_0123)
    chip.bus_write(FLASH_KEYR, 4, 0xCDEF_89AB)
    chip.bus_write(FLASH_CR, 4, 0x1020A)  # STRT, PSIZE x32, SNB 1, SER
    assert chip.flash.busy


@pytest.mark.parametrize("block", [False, True], ids=["word", "block"])
def test_a_debugger_read_of_flash_stalls_until_the_erase_ends(block: bool) -> None:
    # One bank: a flash read waits for the erase (digest, "Flash code fetches stall during erase/program").
    chip = new_chip()
    chip.debugen = True
    chip.halt(DFSR_HALTED)
    chip.load(0x0800_4000, b"\x12\x34\x56\x78")
    _debugger_starts_erase_of_sector_1(chip)
    ends = chip.flash.busy_until_ps()
    value = (int.from_bytes(chip.bus_read_block(0x0800_4000, 8)[:4], "little") if block
             else chip.bus_read(0x0800_4000, 4))
    assert value == 0xFFFF_FFFF  # the erased bytes, not the old ones
    assert chip.clock.now_ps == ends
    assert not chip.bus_read(FLASH_SR, 4) & FLASH_SR_BSY


def test_a_debugger_read_of_flash_with_bsy_stuck_faults() -> None:
    chip = new_chip(Faults(bsy_stuck=True))
    chip.debugen = True
    chip.halt(DFSR_HALTED)
    _debugger_starts_erase_of_sector_1(chip)
    with pytest.raises(BusFault, match="stalled"):
        chip.bus_read(0x0800_4000, 4)


def test_a_debugger_read_of_ram_during_an_erase_takes_no_time() -> None:
    chip = new_chip()
    chip.debugen = True
    chip.halt(DFSR_HALTED)
    _debugger_starts_erase_of_sector_1(chip)
    before = chip.clock.now_ps
    chip.bus_read(SRAM, 4)
    assert chip.clock.now_ps == before and chip.flash.busy


# --- Ctrl-C ----------------------------------------------------------------------------------------------------
def test_ctrl_c_inside_a_unicorn_callback_is_raised_after_advance_with_the_chip_consistent(capfd) -> None:
    import signal

    from f4load.interrupt import Interrupted

    chip = halted_chip_running_ram("""
        ldr r1, =0x40023000     @ CRC_DR
        movs r0, #0
    loop:
        adds r0, r0, #1
        str r0, [r1]
        b loop
    """)
    crc_write = chip._periph_write[0x4002_3000]
    signals = []

    def ctrl_c_during_the_store(*args: object) -> None:  # the signal arrives while Unicorn runs a callback
        if not signals:
            signals.append(1)
            signal.raise_signal(signal.SIGINT)
        crc_write(*args)

    chip._periph_write[0x4002_3000] = ctrl_c_during_the_store  # the CRC unit's MMIO write handler
    chip.resume()
    start = chip.clock.now_ps
    with pytest.raises(Interrupted):
        chip.advance(100 * PS_PER_US)
    assert signals and chip.clock.now_ps == start + 100 * PS_PER_US  # the budget ran to its end first
    stores = chip.read_core_register(0)
    chip.advance(10 * PS_PER_US)  # and the chip goes on as if nothing had happened
    assert chip.read_core_register(0) > stores
    assert "Exception ignored" not in capfd.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
