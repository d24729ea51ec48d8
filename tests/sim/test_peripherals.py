"""The virtual STM32F407's RCC, IWDG and CRC unit, and the host-side CRC that must agree with the CRC unit."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from f4load.crc import stm32_crc32, stm32_crc32_word
from f4load.registers import (
    IWDG_KEY_ACCESS,
    IWDG_KEY_RELOAD,
    IWDG_KEY_START,
    RCC_AHB1ENR_CRCEN,
    RCC_CSR_BORRSTF,
    RCC_CSR_IWDGRSTF,
    RCC_CSR_LSION,
    RCC_CSR_LSIRDY,
    RCC_CSR_PINRSTF,
    RCC_CSR_PORRSTF,
    RCC_CSR_RMVF,
    RCC_CSR_SFTRSTF,
)
from f4load.sim.clock import PS_PER_MS, PS_PER_US
from f4load.sim.peripherals import (
    RESET_FLAGS_FOR_CAUSE,
    CrcUnit,
    Iwdg,
    Rcc,
    iwdg_settings_for,
    timeout_for,
)

KR, PR, RLR, SR = 0x0, 0x4, 0x8, 0xC
RCC_CR, RCC_CFGR, RCC_AHB1ENR, RCC_CSR = 0x00, 0x08, 0x30, 0x74
CRC_DR, CRC_IDR, CRC_CR = 0x0, 0x4, 0x8


def reference_crc(words, crc=0xFFFF_FFFF):
    """RM0090 4.2, bit by bit: each 32-bit word shifted in MSB first through 0x04C11DB7, no reflection."""
    for word in words:
        crc ^= word
        for _ in range(32):
            crc = ((crc << 1) ^ 0x04C1_1DB7) if crc & 0x8000_0000 else crc << 1
            crc &= 0xFFFF_FFFF
    return crc


def words_of(data: bytes):
    return list(struct.unpack(f"<{len(data) // 4}I", data))


# --- host CRC ---------------------------------------------------------------------------------------------

def test_the_crc_of_one_zero_word_is_the_known_stm32_value():
    assert reference_crc([0]) == 0xC704_DD7B
    assert stm32_crc32_word(0) == 0xC704_DD7B
    assert stm32_crc32(b"\x00\x00\x00\x00") == 0xC704_DD7B


def test_the_crc_of_123456789_padded_matches_the_bitwise_reference():
    data = b"123456789"
    padded = data + b"\xff\xff\xff"  # the documented pad rule: erased-flash bytes
    assert stm32_crc32(data) == reference_crc(words_of(padded))


def test_the_crc_of_12345678_as_two_little_endian_words():
    assert stm32_crc32(b"12345678") == reference_crc([0x3433_3231, 0x3837_3635])


def test_the_crc_of_nothing_is_the_initial_value():
    assert stm32_crc32(b"") == 0xFFFF_FFFF
    assert stm32_crc32(b"", 0x1234_5678) == 0x1234_5678


@given(st.binary(max_size=64), st.integers(0, 0xFFFF_FFFF))
def test_the_table_free_crc_equals_the_bitwise_reference(data, initial):
    padded = data + b"\xff" * (-len(data) % 4)
    assert stm32_crc32(data, initial) == reference_crc(words_of(padded), initial)


@given(st.integers(0, 0xFFFF_FFFF), st.integers(0, 0xFFFF_FFFF))
def test_the_one_word_crc_equals_the_bitwise_reference(word, initial):
    assert stm32_crc32_word(word, initial) == reference_crc([word], initial)


@given(st.binary(max_size=32).map(lambda b: b[:len(b) // 4 * 4]), st.binary(max_size=32))
def test_a_crc_can_be_continued_over_whole_words(first, second):
    assert stm32_crc32(second, stm32_crc32(first)) == stm32_crc32(first + second)


def test_a_megabyte_is_checksummed_quickly():
    import time
    data = bytes(range(256)) * 4096
    start = time.perf_counter()
    stm32_crc32(data)
    assert time.perf_counter() - start < 0.5


# --- CRC unit ---------------------------------------------------------------------------------------------

def enabled_crc() -> CrcUnit:
    return CrcUnit(lambda: True)


def test_crc_dr_reads_ffffffff_after_reset():
    assert enabled_crc().read(CRC_DR) == 0xFFFF_FFFF


def test_writing_words_to_crc_dr_gives_the_host_crc_of_their_bytes():
    crc = enabled_crc()
    data = bytes(range(40))
    for word in words_of(data):
        crc.write(CRC_DR, word)
    assert crc.read(CRC_DR) == stm32_crc32(data) == reference_crc(words_of(data))


def test_cr_reset_restarts_the_crc_but_keeps_idr():
    crc = enabled_crc()
    crc.write(CRC_DR, 0x1234_5678)
    crc.write(CRC_IDR, 0x1A5)
    crc.write(CRC_CR, 1)
    assert crc.read(CRC_DR) == 0xFFFF_FFFF
    assert crc.read(CRC_IDR) == 0xA5  # 8 bits wide
    assert crc.read(CRC_CR) == 0


def test_the_crc_unit_does_nothing_while_its_clock_is_off():
    rcc = Rcc()
    crc = CrcUnit(lambda: rcc.crc_enabled)
    crc.write(CRC_DR, 0)
    assert crc.read(CRC_DR) == 0  # an unclocked peripheral reads 0
    rcc.write(RCC_AHB1ENR, rcc.read(RCC_AHB1ENR) | RCC_AHB1ENR_CRCEN)
    assert crc.read(CRC_DR) == 0xFFFF_FFFF  # the earlier write was not counted
    crc.write(CRC_DR, 0)
    assert crc.read(CRC_DR) == 0xC704_DD7B


def test_a_byte_write_to_crc_dr_feeds_the_byte_replicated_across_the_word():
    crc = enabled_crc()
    crc.write(CRC_DR, 0xAB, size=1)
    assert crc.read(CRC_DR) == reference_crc([0xABAB_ABAB])


def test_a_halfword_write_to_crc_dr_feeds_the_halfword_replicated():
    crc = enabled_crc()
    crc.write(CRC_DR, 0x1234, size=2)
    assert crc.read(CRC_DR) == reference_crc([0x1234_1234])


# --- RCC --------------------------------------------------------------------------------------------------

def test_rcc_reset_values_show_hsi_on_and_a_power_on_reset():
    rcc = Rcc()
    assert rcc.read(RCC_CR) & 0x3 == 0x3  # HSION, HSIRDY
    assert rcc.read(RCC_CFGR) == 0
    assert rcc.read(RCC_AHB1ENR) == 0x0010_0000
    assert rcc.read(RCC_CSR) == 0x0E00_0000
    assert not rcc.crc_enabled


def test_rmvf_clears_every_reset_flag():
    rcc = Rcc()
    rcc.write(RCC_CSR, RCC_CSR_RMVF)
    assert rcc.read(RCC_CSR) == 0


def test_recorded_reset_flags_accumulate_until_rmvf():
    rcc = Rcc()
    rcc.write(RCC_CSR, RCC_CSR_RMVF)
    rcc.record_reset(RESET_FLAGS_FOR_CAUSE["iwdg"])
    rcc.reset()
    rcc.record_reset(RESET_FLAGS_FOR_CAUSE["sysresetreq"])
    rcc.reset()
    assert rcc.read(RCC_CSR) == RCC_CSR_IWDGRSTF | RCC_CSR_SFTRSTF | RCC_CSR_PINRSTF


def test_a_power_on_reset_clears_the_old_flags():
    rcc = Rcc()
    rcc.record_reset(RCC_CSR_IWDGRSTF)
    rcc.reset(power_on=True)
    rcc.record_reset(RESET_FLAGS_FOR_CAUSE["por"])
    assert rcc.read(RCC_CSR) == RCC_CSR_PORRSTF | RCC_CSR_BORRSTF | RCC_CSR_PINRSTF


def test_lsion_makes_lsirdy_and_a_system_reset_turns_lsi_off():
    rcc = Rcc()
    rcc.write(RCC_CSR, RCC_CSR_LSION)
    assert rcc.read(RCC_CSR) & (RCC_CSR_LSION | RCC_CSR_LSIRDY) == RCC_CSR_LSION | RCC_CSR_LSIRDY
    rcc.reset()
    assert rcc.read(RCC_CSR) & (RCC_CSR_LSION | RCC_CSR_LSIRDY) == 0


def test_a_system_reset_restores_the_clock_enables():
    rcc = Rcc()
    rcc.write(RCC_AHB1ENR, RCC_AHB1ENR_CRCEN)
    assert rcc.crc_enabled
    rcc.reset()
    assert not rcc.crc_enabled
    assert rcc.read(RCC_AHB1ENR) == 0x0010_0000


def test_a_bor_above_the_por_threshold_sets_borrstf_without_porrstf():
    rcc = Rcc()
    rcc.write(RCC_CSR, RCC_CSR_RMVF)
    rcc.record_reset(RESET_FLAGS_FOR_CAUSE["bor"])
    assert rcc.read(RCC_CSR) == RCC_CSR_BORRSTF | RCC_CSR_PINRSTF


def test_a_brownout_fault_shows_the_por_and_bor_flags():
    rcc = Rcc()
    rcc.write(RCC_CSR, RCC_CSR_RMVF)
    rcc.record_reset(RESET_FLAGS_FOR_CAUSE["brownout"])
    assert rcc.read(RCC_CSR) & (RCC_CSR_BORRSTF | RCC_CSR_PORRSTF) == RCC_CSR_BORRSTF | RCC_CSR_PORRSTF


def test_hse_and_pll_report_ready_as_soon_as_they_are_turned_on():
    rcc = Rcc()
    rcc.write(RCC_CR, rcc.read(RCC_CR) | (1 << 16) | (1 << 24))  # HSEON, PLLON
    assert rcc.read(RCC_CR) & ((1 << 17) | (1 << 25)) == (1 << 17) | (1 << 25)
    rcc.write(RCC_CR, 0x81)  # everything off but HSI
    assert rcc.read(RCC_CR) == 0x83


def test_the_system_clock_switch_status_follows_the_switch():
    rcc = Rcc()
    rcc.write(RCC_CFGR, 0x2)  # SW = PLL
    assert rcc.read(RCC_CFGR) & 0xF == 0xA  # SWS = PLL


def test_other_rcc_registers_store_what_is_written_and_reset_to_their_reset_values():
    rcc = Rcc()
    assert rcc.read(0x04) == 0x2400_3010  # RCC_PLLCFGR
    rcc.write(0x40, 0x1000_0000)  # RCC_APB1ENR.PWREN
    assert rcc.read(0x40) == 0x1000_0000
    rcc.reset()
    assert rcc.read(0x40) == 0


def test_the_reset_flags_byte_can_be_read_alone():
    rcc = Rcc()
    assert rcc.read(RCC_CSR + 3, size=1) == 0x0E


# --- IWDG -------------------------------------------------------------------------------------------------

def test_iwdg_timeouts_follow_the_rm0090_table():
    assert timeout_for(0, 0xFFF) == 512 * PS_PER_MS
    assert timeout_for(0, 0) == 125 * PS_PER_US
    assert timeout_for(6, 0xFFF) == 32_768 * PS_PER_MS
    assert timeout_for(7, 0xFFF) == 32_768 * PS_PER_MS


@pytest.mark.parametrize("wanted_ms", [0.125, 1, 5, 100, 512, 1000, 20_000, 32_768])
def test_iwdg_settings_for_a_timeout_come_within_one_tick(wanted_ms):
    prescaler, reload = iwdg_settings_for(wanted_ms)
    tick_ps = (4 << min(prescaler, 6)) * 31_250_000
    assert abs(timeout_for(prescaler, reload) - wanted_ms * PS_PER_MS) <= tick_ps
    assert 0 <= reload <= 0xFFF


def test_a_hardware_watchdog_expires_512_ms_after_reset():
    iwdg = Iwdg()
    iwdg.hardware_start()
    assert iwdg.expiry_ps(counting=True) == 512 * PS_PER_MS
    iwdg.sync(512 * PS_PER_MS - 1, counting=True)
    assert not iwdg.expired
    iwdg.sync(512 * PS_PER_MS, counting=True)
    assert iwdg.expired


def test_a_stopped_iwdg_never_expires():
    iwdg = Iwdg()
    iwdg.sync(100_000 * PS_PER_MS, counting=True)
    assert not iwdg.expired
    assert iwdg.expiry_ps(counting=True) is None


def test_reloading_postpones_the_expiry():
    iwdg = Iwdg()
    iwdg.write(KR, IWDG_KEY_START)
    iwdg.sync(400 * PS_PER_MS, counting=True)
    iwdg.write(KR, IWDG_KEY_RELOAD)
    assert iwdg.expiry_ps(counting=True) == 912 * PS_PER_MS
    iwdg.sync(900 * PS_PER_MS, counting=True)
    assert not iwdg.expired


def test_the_iwdg_freezes_while_not_counting():
    iwdg = Iwdg()
    iwdg.hardware_start()
    iwdg.sync(100 * PS_PER_MS, counting=True)
    iwdg.sync(10_000 * PS_PER_MS, counting=False)  # core halted with DBG_IWDG_STOP
    assert not iwdg.expired
    assert iwdg.expiry_ps(counting=False) is None
    assert iwdg.expiry_ps(counting=True) == 10_412 * PS_PER_MS


def test_pr_and_rlr_are_write_protected_until_0x5555():
    iwdg = Iwdg()
    iwdg.write(PR, 3)
    iwdg.write(RLR, 10)
    assert (iwdg.read(PR), iwdg.read(RLR)) == (0, 0xFFF)
    iwdg.write(KR, IWDG_KEY_ACCESS)
    iwdg.write(PR, 3)
    iwdg.write(RLR, 10)
    assert (iwdg.read(PR), iwdg.read(RLR)) == (3, 10)


def test_a_reload_key_write_protects_pr_and_rlr_again():
    iwdg = Iwdg()
    iwdg.write(KR, IWDG_KEY_ACCESS)
    iwdg.write(KR, IWDG_KEY_RELOAD)
    iwdg.write(PR, 5)
    assert iwdg.read(PR) == 0


def test_pvu_and_rvu_are_set_briefly_after_an_update():
    iwdg = Iwdg()
    iwdg.write(KR, IWDG_KEY_ACCESS)
    iwdg.write(PR, 2)
    iwdg.write(RLR, 100)
    assert iwdg.read(SR) == 0b11
    iwdg.sync(5 * 31_250_000 - 1, counting=True)
    assert iwdg.read(SR) == 0b11
    iwdg.sync(5 * 31_250_000, counting=True)
    assert iwdg.read(SR) == 0


def test_an_application_timeout_of_5_ms_expires_after_5_ms():
    iwdg = Iwdg()
    iwdg.sync(1_000 * PS_PER_MS, counting=True)
    prescaler, reload = iwdg_settings_for(5)
    iwdg.write(KR, IWDG_KEY_ACCESS)
    iwdg.write(PR, prescaler)
    iwdg.write(RLR, reload)
    iwdg.write(KR, IWDG_KEY_START)
    assert iwdg.expiry_ps(counting=True) == 1_005 * PS_PER_MS


def test_a_reset_stops_the_iwdg_and_restores_pr_and_rlr():
    iwdg = Iwdg()
    iwdg.start(prescaler=4, reload=7)
    iwdg.sync(1 * PS_PER_MS, counting=True)
    iwdg.reset()
    assert not iwdg.running and not iwdg.expired
    assert (iwdg.read(PR), iwdg.read(RLR)) == (0, 0xFFF)
    assert iwdg.expiry_ps(counting=True) is None


def test_a_new_prescaler_slows_a_running_countdown_without_a_reload():
    from f4load.registers import IWDG_KEY_ACCESS

    iwdg = Iwdg()
    iwdg.sync(0, counting=True)
    iwdg.hardware_start()  # /4, 0xFFF: 512 ms
    iwdg.sync(256 * PS_PER_MS, counting=True)  # half of it gone
    iwdg.write(0x00, IWDG_KEY_ACCESS)
    iwdg.write(0x04, 6)  # /256: the remaining ticks now last 64 times longer
    assert iwdg.expiry_ps(counting=True) == 256 * PS_PER_MS + 64 * 256 * PS_PER_MS


def test_pr_and_rlr_writes_while_pvu_and_rvu_are_set_are_ignored():
    # RM0090 19.4.4 (IWDG_SR): the prescaler (reload) value can be updated only while PVU (RVU) is 0.
    iwdg = Iwdg()
    iwdg.write(KR, IWDG_KEY_ACCESS)
    iwdg.write(PR, 2)
    iwdg.write(RLR, 100)
    iwdg.write(PR, 5)  # PVU still set: ignored
    iwdg.write(RLR, 200)  # RVU still set: ignored
    assert (iwdg.read(PR), iwdg.read(RLR)) == (2, 100)
    iwdg.sync(5 * 31_250_000, counting=True)  # both updates done
    assert iwdg.read(SR) == 0
    iwdg.write(PR, 5)
    iwdg.write(RLR, 200)
    assert (iwdg.read(PR), iwdg.read(RLR)) == (5, 200)


def test_a_47_khz_lsi_shortens_the_iwdg_timeout_in_proportion():
    iwdg = Iwdg(lsi_hz=47_000)
    iwdg.hardware_start()  # /4, 0xFFF: 512 ms at 32 kHz
    assert iwdg.timeout_ps == 4 * 4096 * (10**12 // 47_000)  # 348.6 ms
    assert abs(iwdg.timeout_ps - 512 * PS_PER_MS * 32 / 47) < PS_PER_US


def test_a_17_khz_lsi_stretches_the_iwdg_timeout_and_its_update_flags():
    iwdg = Iwdg(lsi_hz=17_000)
    iwdg.write(KR, IWDG_KEY_ACCESS)
    iwdg.write(PR, 1)
    iwdg.sync(5 * 31_250_000, counting=True)  # 5 periods at 32 kHz: not yet 5 periods at 17 kHz
    assert iwdg.read(SR) == 0b01
    iwdg.sync(5 * (10**12 // 17_000), counting=True)
    assert iwdg.read(SR) == 0
    assert iwdg.timeout_ps == 8 * 4096 * (10**12 // 17_000)  # 963.8 ms instead of 1.024 s
