"""The Keil STM32F4xx_2048.FLM, run by unmodified pyocd on the virtual STM32F407, behaves as on silicon.

This is the peer a user has today: pyocd with the algorithm from ST's CMSIS-Pack. What it does on the chip
(from its disassembly):
- Init: FLASH_KEYR keys (unconditionally), ACR = 0, SR = SR | 0xF0 (a read-modify-write of a
  write-1-to-clear register, so *every* flag that reads 1 is cleared, OPERR and EOP included), and only when
  OPTCR.WDG_SW = 0: IWDG_KR = 0x5555, PR = 6 (/256), RLR = 0xFFF, without a reload.
- EraseSector: SR |= 0xF0, CR = SER (PSIZE x8!), CR |= SNB, CR |= STRT; waits for BSY while writing
  IWDG_KR = 0xAAAA; clears SER; returns 1 (after clearing the flags the same way) if SR bits 7:4 are set.
- ProgramPage: SR |= 0xF0, CR = 0, then per word CR |= PG | PSIZE x32, one word store, BSY poll without a
  watchdog refresh, CR &= ~PG; returns 1 on SR bits 7:4. Never sets ERRIE, so OPERR is never raised.
- UnInit: CR |= LOCK.

One scenario per test, one or more per fault of docs/faults.md. The ideal link is used except where time is
the point; pyocd's wall-clock flash timeouts are shortened (session options) where a timeout is the expected
outcome, so the suite stays fast. All tests skip with "peer FLM absent: <path>" when the FLM is not there.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
from pyocd.core import exceptions
from pyocd.core.helpers import ConnectHelper
from pyocd.flash.eraser import FlashEraser
from pyocd.flash.file_programmer import FileProgrammer
from pyocd.flash.flash import Flash

from f4load import registers as reg
from f4load.part import FLASH_START, PARTS
from f4load.sim import state as sim_state
from f4load.sim.clock import LINK_MODELS, PS_PER_MS, PS_PER_S
from f4load.sim.peer import peer_flm_candidate, peer_flm_path, use_flm

KB = 1024
PAGE = 1 * KB  # the Keil FLM's page size (FlashDevice.szPage)
SECTOR_1 = FLASH_START + 16 * KB
SECTOR_2 = FLASH_START + 32 * KB
# Wall-clock seconds pyocd waits for an algorithm call, where a hang is the expected outcome.
SHORT_TIMEOUTS = {"flash.timeout.init": 2.0, "flash.timeout.erase_sector": 2.0, "flash.timeout.program": 2.0}
# ARMv7-M B3.2.15: CFSR.BFSR.IMPRECISERR; HFSR.FORCED.
SCB_CFSR, CFSR_IMPRECISERR = 0xE000_ED28, 1 << 10
SCB_HFSR, HFSR_FORCED = 0xE000_ED2C, 1 << 30
# DS8626 Table 40 floor for 512 KB (x32, typical): erase sectors 0-7 4.55 s + program 2.10 s.
DS8626_FLOOR_512K_S = 6.65


@pytest.fixture
def keil_flm() -> Path:
    path = peer_flm_path()
    if path is None:
        pytest.skip(f"peer FLM absent: {peer_flm_candidate()}")
    return path


@pytest.fixture
def keil_session(open_session: Callable[..., Any], keil_flm: Path) -> Callable[..., Any]:
    """`keil_session(link="ideal", **pyocd_options)`: an open session whose flash uses the Keil FLM."""
    def open_(link: str = "ideal", **options: Any) -> Any:
        session = open_session(link, **options)
        use_flm(session, keil_flm)
        return session

    return open_


def image_of(size: int, seed: int = 2048) -> bytes:
    return random.Random(seed).randbytes(size)


def quiet(progress: float) -> None:
    """A FileProgrammer progress callback that prints nothing."""


def program(session: Any, tmp_path: Path, image: bytes, address: int = FLASH_START, **options: Any) -> None:
    path = tmp_path / "image.bin"
    path.write_bytes(image)
    FileProgrammer(session, progress=quiet, **options).program(str(path), base_address=address)


def flash_of(session: Any) -> bytes:
    """The virtual chip's main flash as it is (not through the debugger, which RDP may block)."""
    return bytes(session.probe.chip.to_state().flash)


def keil_flash(session: Any) -> Flash:
    """pyocd's Flash object of the main flash region (the Keil algorithm after use_flm)."""
    return session.target.memory_map.get_boot_memory().flash


def clear_reset_flags(session: Any) -> None:
    """RCC_CSR.RMVF: forget the power-on flags, so the flags read later are those of a new reset."""
    session.target.write32(reg.RCC_CSR, reg.RCC_CSR_RMVF)
    assert session.target.read32(reg.RCC_CSR) & reg.RCC_CSR_BORRSTF == 0


def inject(monkeypatch: pytest.MonkeyPatch, faults: str) -> None:
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", faults)


# --- the algorithm works -------------------------------------------------------------------------------
@pytest.fixture
def unopened_session(sim_state_dir: Path) -> Iterator[Any]:
    session = ConnectHelper.session_with_chosen_probe(unique_id="f4sim", blocking=False,
                                                      options={"f4sim.link": "ideal"})
    assert session is not None
    yield session
    session.close()


def test_use_flm_before_open_gives_pyocd_one_flash_region_with_the_part_sectors_and_1_kb_pages(
        unopened_session, keil_flm):
    region = use_flm(unopened_session, keil_flm)
    unopened_session.open()
    flash_regions = [r for r in unopened_session.target.memory_map if r.is_flash]
    assert flash_regions == [region]
    assert (region.start, region.end + 1) == (FLASH_START, PARTS["stm32f407ve"].flash_end)
    assert region.page_size == PAGE
    assert [(r.start, r.length, r.sector_size) for r in region.submap] == [
        (FLASH_START, 64 * KB, 16 * KB), (FLASH_START + 64 * KB, 64 * KB, 64 * KB),
        (FLASH_START + 128 * KB, 384 * KB, 128 * KB)]
    assert isinstance(region.flash, Flash) and region.flash.region is region
    assert region.flash.flash_algo is region.algo
    assert region.algo["load_address"] >= 0x2000_0000  # in SRAM, not in CCM (not executable)


def test_keil_flm_programs_an_image_and_a_second_process_reads_it_back(
        keil_session, run_pyocd, sim_state_dir, tmp_path):
    image = image_of(80 * KB + 321)  # sectors 0-4, ragged end
    session = keil_session()
    program(session, tmp_path, image)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(image))) == image
    assert session.probe.chip.flash.operation_counts["erase"] == 5
    session.close()

    out = tmp_path / "readback.bin"
    result = run_pyocd("commander", "-u", "f4sim", "-c", f"savemem {FLASH_START:#x} {len(image)} {out}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes() == image


def test_keil_chip_erase_runs_at_x8_and_takes_the_x8_mass_erase_time(keil_session):
    """EraseChip sets MER (and bit 15, MER1 on the dual-bank parts, reserved here) with PSIZE x8: DS8626
    Table 40 gives 16 s typical, twice the 8 s at x32. Time is the point, so the link is stlink-v2."""
    session = keil_session("stlink-v2")
    session.probe.chip.load(FLASH_START, bytes(64 * KB))
    start_ps = session.probe.clock.now_ps
    FlashEraser(session, FlashEraser.Mode.CHIP).erase()
    elapsed_ps = session.probe.clock.now_ps - start_ps
    assert flash_of(session) == b"\xff" * PARTS["stm32f407ve"].flash_size
    assert 16 * PS_PER_S <= elapsed_ps < 17 * PS_PER_S


# --- wrp: write protection -----------------------------------------------------------------------------
def test_write_protected_sector_fails_pyocds_erase_at_that_sector(keil_session, monkeypatch, tmp_path):
    inject(monkeypatch, "wrp=1")
    session = keil_session()
    with pytest.raises(exceptions.FlashEraseFailure) as failure:
        program(session, tmp_path, image_of(48 * KB))  # sectors 0, 1, 2
    assert failure.value.address == SECTOR_1
    assert failure.value.result_code == 1  # EraseSector saw WRPERR in SR bits 7:4
    # The FLM clears the flags it reports: WRPERR is not left in SR for anyone to read afterwards.
    assert session.target.read32(reg.FLASH_SR) & reg.FLASH_SR_ERRORS == 0


def test_sectors_next_to_a_write_protected_one_still_erase(keil_session, monkeypatch):
    inject(monkeypatch, "wrp=1")
    session = keil_session()
    old = bytes(48 * KB)  # zeros in sectors 0-2, as an earlier image would have left them
    session.probe.chip.load(FLASH_START, old)
    flash = keil_flash(session)
    flash.init(Flash.Operation.ERASE)
    flash.erase_sector(FLASH_START)
    with pytest.raises(exceptions.FlashEraseFailure) as failure:
        flash.erase_sector(SECTOR_1)
    flash.erase_sector(SECTOR_2)  # EraseSector clears the previous WRPERR first, so this one runs
    flash.uninit()
    assert failure.value.result_code == 1
    after = flash_of(session)
    assert after[:16 * KB] == b"\xff" * (16 * KB)
    assert after[16 * KB:32 * KB] == old[16 * KB:32 * KB]  # protected: unchanged
    assert after[32 * KB:48 * KB] == b"\xff" * (16 * KB)


def test_write_protected_chip_erase_is_reported_as_success_and_erases_nothing(keil_session, monkeypatch):
    """A mass erase is refused with WRPERR while any sector is protected (RM0090 3.7.3); EraseChip never
    looks at SR and returns 0, so pyocd's chip erase reports success. WRPERR stays set in SR."""
    inject(monkeypatch, "wrp=3")
    session = keil_session()
    old = bytes(64 * KB)
    session.probe.chip.load(FLASH_START, old)
    FlashEraser(session, FlashEraser.Mode.CHIP).erase()  # no exception
    assert flash_of(session)[:len(old)] == old
    assert session.target.read32(reg.FLASH_SR) & reg.FLASH_SR_WRPERR


# --- rdp1: read-out protection level 1 with the debugger attached --------------------------------------
def test_rdp1_pyocd_fails_reading_flash_before_it_erases_anything(keil_session, monkeypatch, tmp_path):
    """pyocd's smart flash reads the flash first; RDP level 1 makes that a bus fault (RM0090 3.7.3)."""
    inject(monkeypatch, "rdp1")
    session = keil_session()
    with pytest.raises(exceptions.TransferFaultError) as failure:
        program(session, tmp_path, image_of(16 * KB))
    assert failure.value.fault_address == FLASH_START
    assert session.probe.chip.flash.operation_counts == {"erase": 0, "program": 0}


def test_rdp1_keil_erase_and_program_fail_with_wrperr(keil_session, monkeypatch, tmp_path):
    """Without smart flash pyocd goes straight to the algorithm: every erase and program is refused with
    WRPERR (RM0090 3.7.3: no sector can be changed while RDP level 1 sees a debugger); the FLM returns 1."""
    inject(monkeypatch, "rdp1")
    session = keil_session()
    before = flash_of(session)
    with pytest.raises(exceptions.FlashEraseFailure) as erase_failure:
        program(session, tmp_path, image_of(16 * KB), smart_flash=False)
    assert (erase_failure.value.address, erase_failure.value.result_code) == (FLASH_START, 1)

    flash = keil_flash(session)
    flash.init(Flash.Operation.PROGRAM)
    with pytest.raises(exceptions.FlashProgramFailure) as program_failure:
        flash.program_page(FLASH_START, list(bytes(PAGE)))
    flash.uninit()
    assert program_failure.value.result_code == 1
    assert flash_of(session) == before
    assert session.probe.chip.flash.operation_counts == {"erase": 0, "program": 0}


# --- sticky: error flags left in FLASH_SR by the application --------------------------------------------
def test_sticky_sequence_flags_are_cleared_by_keil_init_so_programming_succeeds(keil_session, monkeypatch,
                                                                                 tmp_path):
    inject(monkeypatch, "sticky=PGSERR,PGPERR,PGAERR,WRPERR")
    session = keil_session()
    sticky = reg.FLASH_SR_PGSERR | reg.FLASH_SR_PGPERR | reg.FLASH_SR_PGAERR | reg.FLASH_SR_WRPERR
    assert session.target.read32(reg.FLASH_SR) & sticky == sticky  # the application left them
    image = image_of(20 * KB, seed=7)
    program(session, tmp_path, image)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(image))) == image


def test_sticky_operr_is_cleared_too_because_init_writes_sr_back_with_every_set_flag(keil_session, monkeypatch,
                                                                                     tmp_path):
    """Init does SR = SR | 0xF0. SR is write-1-to-clear, so OPERR (bit 1), read as 1 and written back as 1,
    is cleared as well, although the FLM only means bits 7:4."""
    inject(monkeypatch, "sticky=OPERR")
    session = keil_session()
    assert session.target.read32(reg.FLASH_SR) & reg.FLASH_SR_OPERR
    flash = keil_flash(session)
    flash.init(Flash.Operation.PROGRAM)
    assert session.target.read32(reg.FLASH_SR) == 0
    flash.uninit()
    image = image_of(20 * KB, seed=8)
    program(session, tmp_path, image)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(image))) == image


# --- bad-key: the application locked FLASH_CR with a wrong key -------------------------------------------
def test_bad_key_keil_init_faults_the_bus_and_pyocd_reports_a_failed_init(keil_session, monkeypatch, tmp_path):
    """Init writes the keys without looking at LOCK: after a wrong key every KEYR write is a bus error
    (RM0090 3.6.1), the store takes a HardFault. pyocd reports a failed (here: timed-out) Init."""
    inject(monkeypatch, "bad-key")
    session = keil_session(**SHORT_TIMEOUTS)
    with pytest.raises(exceptions.FlashFailure) as failure:
        program(session, tmp_path, image_of(16 * KB))
    assert str(failure.value).startswith("flash init")
    target = session.target
    assert target.read32(SCB_CFSR) & CFSR_IMPRECISERR
    assert target.read32(SCB_HFSR) & HFSR_FORCED
    assert target.read32(reg.FLASH_CR) & reg.FLASH_CR_LOCK
    assert session.probe.chip.flash.operation_counts == {"erase": 0, "program": 0}


def test_bad_key_is_avoided_by_connecting_under_reset(keil_session, monkeypatch, tmp_path):
    """Under reset pyocd halts the core on its reset vector, before the application can write the bad key."""
    inject(monkeypatch, "bad-key")
    session = keil_session(connect_mode="under-reset")
    image = image_of(16 * KB, seed=9)
    program(session, tmp_path, image)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(image))) == image


# --- vdd: PSIZE too wide for the supply -----------------------------------------------------------------
def test_low_supply_keil_erases_at_x8_but_its_x32_program_silently_does_not_take(keil_session, monkeypatch,
                                                                                 tmp_path):
    """At 2.0 V only x8 works (RM0090 Table 13). EraseSector uses x8, so the erase takes; ProgramPage uses x32,
    which does not program, and since the FLM never sets ERRIE not even OPERR tells: pyocd reports success."""
    inject(monkeypatch, "vdd=2.0")
    session = keil_session()
    session.probe.chip.load(FLASH_START, bytes(16 * KB))  # old content: zeros
    image = image_of(16 * KB, seed=10)
    program(session, tmp_path, image)  # no exception: pyocd believes it programmed the image
    assert bytes(session.target.read_memory_block8(FLASH_START, len(image))) == b"\xff" * len(image)
    assert session.target.read32(reg.FLASH_SR) & reg.FLASH_SR_ERRORS == 0
    assert session.probe.chip.flash.operation_counts == {"erase": 1, "program": len(image) // 4}


# --- bsy-stuck -------------------------------------------------------------------------------------------
def test_bsy_stuck_pyocd_times_out_in_erase(keil_session, monkeypatch, tmp_path):
    inject(monkeypatch, "bsy-stuck")
    session = keil_session(**SHORT_TIMEOUTS)
    with pytest.raises(exceptions.FlashEraseFailure, match="timed out"):
        program(session, tmp_path, image_of(16 * KB))
    assert session.target.read32(reg.FLASH_SR) & reg.FLASH_SR_BSY


# --- iwdg / hw-watchdog: the independent watchdog --------------------------------------------------------
def test_application_watchdog_resets_the_chip_during_keil_programming(keil_session, monkeypatch, tmp_path):
    """The application started the IWDG (5 ms, WDG_SW = 1: Init leaves it alone). EraseSector refreshes it
    while it waits; ProgramPage does not, and pyocd does not freeze it (DBGMCU_APB1_FZ): the chip resets."""
    inject(monkeypatch, "iwdg=5ms")
    session = keil_session(**SHORT_TIMEOUTS)
    clear_reset_flags(session)
    image = image_of(48 * KB, seed=11)
    with pytest.raises(exceptions.FlashProgramFailure):
        program(session, tmp_path, image)
    assert session.target.read32(reg.RCC_CSR) & reg.RCC_CSR_IWDGRSTF
    counts = session.probe.chip.flash.operation_counts
    assert counts["erase"] == 3  # every erase survived: it refreshes the watchdog
    assert 0 < counts["program"] < len(image) // 4  # the reset came while programming
    assert bytes(session.target.read_memory_block8(FLASH_START, len(image))) != image


def test_hardware_watchdog_keil_init_slows_it_and_erase_reloads_it_so_programming_succeeds(
        keil_session, monkeypatch, tmp_path):
    """WDG_SW = 0 and an application timeout of 5 ms: Init sets PR = /256, RLR = 0xFFF, and the first
    EraseSector's refresh loads 0xFFF at /256 (32.8 s), long enough for this image."""
    inject(monkeypatch, "hw-watchdog iwdg=5ms")
    session = keil_session()
    clear_reset_flags(session)
    image = image_of(48 * KB, seed=12)
    program(session, tmp_path, image)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(image))) == image
    target = session.target
    assert (target.read32(reg.IWDG_PR), target.read32(reg.IWDG_RLR)) == (6, 0xFFF)
    assert target.read32(reg.RCC_CSR) & reg.RCC_CSR_IWDGRSTF == 0


def test_hardware_watchdog_resets_the_chip_when_keil_programs_without_an_erase(keil_session, monkeypatch):
    """Programming an erased chip page by page (no EraseSector, so no refresh): the application's 5 ms
    countdown (/4, RLR 39) keeps running, but Init's PR = /256 slows the counter that is already running
    (RM0090 19.4.2: PR selects the divider feeding the counter; RLR only applies at the next reload), so the
    remaining ~39 ticks last ~300 ms, not ~5 ms. Then the chip resets (IWDGRSTF)."""
    inject(monkeypatch, "hw-watchdog iwdg=5ms")
    session = keil_session(**SHORT_TIMEOUTS)
    clear_reset_flags(session)
    image = image_of(128 * KB, seed=13)  # 128 pages of ~4.1 ms: longer than the slowed countdown
    flash = keil_flash(session)
    flash.init(Flash.Operation.PROGRAM)
    with pytest.raises(exceptions.FlashProgramFailure):
        for offset in range(0, len(image), PAGE):
            flash.program_page(FLASH_START + offset, list(image[offset:offset + PAGE]))
    assert session.target.read32(reg.RCC_CSR) & reg.RCC_CSR_IWDGRSTF
    # Programming time before the reset: 16 us per word written (DS8626 Table 40, typical).
    reset_after_ps = session.probe.chip.flash.operation_counts["program"] * 16 * 10**6
    # At least 100 ms of programming before the reset (silicon: ~300 ms), far more than the 5 ms
    # the application's own prescaler would have left.
    assert reset_after_ps >= 100 * PS_PER_MS


# --- reset=erase:N: brown-out in the middle of an erase ---------------------------------------------------
def test_brownout_in_the_middle_of_the_second_erase_is_a_failure_and_csr_shows_borrstf(keil_session, monkeypatch,
                                                                                       tmp_path):
    inject(monkeypatch, "reset=erase:2:middle:brownout")
    session = keil_session(**SHORT_TIMEOUTS)
    clear_reset_flags(session)
    old = bytes(48 * KB)
    session.probe.chip.load(FLASH_START, old)
    # pyocd sees the core reset under it; depending on whether the debug port survives the brown-out it
    # reports the algorithm not coming back (a FlashFailure) or the link failing (a TransferError).
    with pytest.raises((exceptions.FlashFailure, exceptions.TransferError)):
        program(session, tmp_path, image_of(48 * KB))
    assert session.target.read32(reg.RCC_CSR) & reg.RCC_CSR_BORRSTF
    after = flash_of(session)
    assert after[:16 * KB] == b"\xff" * (16 * KB)  # the first erase completed
    # (sector 1, cut half-way, is in no defined state on silicon: not asserted)
    assert after[32 * KB:48 * KB] == old[32 * KB:]  # the third erase never started
    assert session.probe.chip.flash.operation_counts["erase"] == 2


# --- disconnect=N: the SWD link is lost -----------------------------------------------------------------
def test_link_lost_while_programming_is_pyocds_probe_disconnected_error(keil_session, monkeypatch, sim_state_dir,
                                                                      tmp_path):
    image = image_of(32 * KB, seed=14)
    session = keil_session()
    program(session, tmp_path, image)
    commands = session.probe.commands  # probe open to programmed
    session.close()
    sim_state.reset_state(sim_state_dir)

    inject(monkeypatch, f"disconnect={commands // 2}")
    session = keil_session()
    with pytest.raises(exceptions.ProbeDisconnected, match="link lost"):
        program(session, tmp_path, image)
    session.close()  # pyocd logs the failed disconnect, does not raise
    assert sim_state.load_state(sim_state_dir).flash[:len(image)] != image


# --- flash=1024: the 1 MB part ---------------------------------------------------------------------------
def test_1mb_part_programs_a_full_size_image(keil_session, monkeypatch, tmp_path):
    inject(monkeypatch, "flash=1024")
    # stlink-v3 rather than ideal only for the host's sake: on the ideal link every DHCSR poll steps the chip
    # in 50 us slices, which for 16.8 s of x8 erases costs twice the wall-clock time.
    session = keil_session("stlink-v3")
    region = session.target.memory_map.get_boot_memory()
    assert region.end + 1 == PARTS["stm32f407vg"].flash_end
    image = image_of(1024 * KB, seed=15)
    program(session, tmp_path, image)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(image))) == image
    assert session.probe.chip.flash.operation_counts == {"erase": 12, "program": len(image) // 4}


# --- measurement ----------------------------------------------------------------------------------------
def test_measurement_pyocd_with_keil_flm_programs_512_kb_over_stlink_v2(keil_session, tmp_path, capsys):
    """A measurement, not a requirement: virtual time and probe commands of pyocd + the Keil FLM writing a
    512 KB image to an erased chip over the stlink-v2 link model. Only sanity is asserted."""
    link = LINK_MODELS["stlink-v2"]
    image = image_of(512 * KB, seed=16)
    session = keil_session(link.name)
    probe = session.probe
    marks: Dict[str, List[Tuple[int, int]]] = {"erase": [], "program": []}
    probe.chip.on_flash_operation = lambda kind, phase: marks[kind].append((probe.clock.now_ps, probe.commands))
    start = (probe.clock.now_ps, probe.commands)
    program(session, tmp_path, image)
    end = (probe.clock.now_ps, probe.commands)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(image))) == image

    def span(first: Tuple[int, int], last: Tuple[int, int]) -> str:
        return f"{(last[0] - first[0]) / PS_PER_S:.3f} s virtual, {last[1] - first[1]} probe commands"

    with capsys.disabled():
        print(f"\nMEASUREMENT pyocd FileProgrammer + Keil STM32F4xx_2048.FLM, 512 KB, link {link.name}: "
              f"{span(start, end)} (DS8626 floor {DS8626_FLOOR_512K_S} s)\n"
              f"  erase phase   {span(marks['erase'][0], marks['erase'][-1])}\n"
              f"  program phase {span(marks['program'][0], marks['program'][-1])}")
    elapsed_ps, commands = end[0] - start[0], end[1] - start[1]
    assert elapsed_ps > DS8626_FLOOR_512K_S * PS_PER_S
    assert elapsed_ps >= commands * link.command_overhead_ps
