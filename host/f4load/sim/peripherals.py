"""The small peripherals of the virtual STM32F407: RCC (reset flags, clock enables), IWDG and the CRC unit.

Each class answers register reads and writes at offsets from its base (`read(offset, size)`,
`write(offset, value, size)`); sub-word accesses read or merge the addressed byte lanes. Register names and
bits come from `f4load.registers`. `WatchdogClock` is the IWDG as the chip clocks it: counted up to the virtual
clock before every access, and stopped while the chip holds it (in reset, or halted with DBG_IWDG_STOP).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from f4load.crc import CRC_INIT, stm32_crc32_word
from f4load.registers import (
    CRC_CR_RESET,
    IWDG_KEY_ACCESS,
    IWDG_KEY_RELOAD,
    IWDG_KEY_START,
    LSI_HZ,
    RCC_AHB1ENR_CRCEN,
    RCC_CSR_BORRSTF,
    RCC_CSR_IWDGRSTF,
    RCC_CSR_LPWRRSTF,
    RCC_CSR_LSION,
    RCC_CSR_LSIRDY,
    RCC_CSR_PINRSTF,
    RCC_CSR_PORRSTF,
    RCC_CSR_RMVF,
    RCC_CSR_SFTRSTF,
    RCC_CSR_WWDGRSTF,
)
from f4load.sim.clock import PS_PER_MS, PS_PER_S, VirtualClock


def _lane_merge(old: int, offset: int, value: int, size: int) -> Tuple[int, int, int]:
    """(word offset, merged word, lane mask) for a `size`-byte write of `value` at `offset`."""
    shift = (offset & 3) * 8
    lanes = ((1 << (8 * size)) - 1) << shift
    return offset & ~3, (old & ~lanes) | ((value << shift) & lanes), lanes


def _lane_read(word: int, offset: int, size: int) -> int:
    return (word >> ((offset & 3) * 8)) & ((1 << (8 * size)) - 1)


# --- RCC, RM0090 7.3 ---------------------------------------------------------------------------------------
RCC_CR_OFFSET = 0x00
RCC_PLLCFGR_OFFSET = 0x04
RCC_CFGR_OFFSET = 0x08
RCC_AHB1ENR_OFFSET = 0x30
RCC_CSR_OFFSET = 0x74
RCC_PLLI2SCFGR_OFFSET = 0x84
RCC_SIZE = 0x400

RCC_CR_HSION, RCC_CR_HSIRDY = 1 << 0, 1 << 1
RCC_CR_HSEON, RCC_CR_HSERDY = 1 << 16, 1 << 17
RCC_CR_PLLON, RCC_CR_PLLRDY = 1 << 24, 1 << 25
RCC_CR_PLLI2SON, RCC_CR_PLLI2SRDY = 1 << 26, 1 << 27
RCC_CR_READY_BITS = RCC_CR_HSIRDY | RCC_CR_HSERDY | RCC_CR_PLLRDY | RCC_CR_PLLI2SRDY
RCC_CFGR_SW_MASK = 0x3
RCC_CFGR_SWS_SHIFT = 2

# Reset values (RM0090 7.3): RCC_CR 0x0000_XX83 (HSION, HSIRDY, HSITRIM = 16; HSICAL is factory data, read as
# 0 here), RCC_PLLCFGR 0x2400_3010, RCC_AHB1ENR 0x0010_0000 (CCMDATARAMEN), RCC_PLLI2SCFGR 0x2000_3000.
RCC_CR_RESET = 0x0000_0083
RCC_AHB1ENR_RESET = 0x0010_0000
RCC_RESET_VALUES: Dict[int, int] = {RCC_CR_OFFSET: RCC_CR_RESET, RCC_PLLCFGR_OFFSET: 0x2400_3010,
                                    RCC_AHB1ENR_OFFSET: RCC_AHB1ENR_RESET, RCC_PLLI2SCFGR_OFFSET: 0x2000_3000}
RCC_CSR_RESET_FLAGS = (RCC_CSR_LPWRRSTF | RCC_CSR_WWDGRSTF | RCC_CSR_IWDGRSTF | RCC_CSR_SFTRSTF
                       | RCC_CSR_PORRSTF | RCC_CSR_PINRSTF | RCC_CSR_BORRSTF)
# RM0090 7.1.2: every internal reset source drives the NRST pin low, so PINRSTF is set along with the flag of
# the source. BORRSTF is set by a POR/PDR and by a BOR; PORRSTF only by a POR/PDR (RCC_CSR reset value after
# power-on 0x0E00_0000). "brownout" is the faults.py cause: a droop deep enough to reach the POR/PDR threshold
# (with the factory BOR_LEV = off only the PDR catches it); "bor" is a BOR reset above that threshold.
RESET_FLAGS_FOR_CAUSE: Dict[str, int] = {
    "por": RCC_CSR_PORRSTF | RCC_CSR_BORRSTF | RCC_CSR_PINRSTF,
    "brownout": RCC_CSR_BORRSTF | RCC_CSR_PORRSTF | RCC_CSR_PINRSTF,
    "bor": RCC_CSR_BORRSTF | RCC_CSR_PINRSTF,
    "pin": RCC_CSR_PINRSTF,
    "sysresetreq": RCC_CSR_SFTRSTF | RCC_CSR_PINRSTF,
    "iwdg": RCC_CSR_IWDGRSTF | RCC_CSR_PINRSTF,
}


class Rcc:
    """The RCC register block (0x4002_3800, 1 KB): every word stores what is written, with these behaviours:

    - RCC_CR: HSIRDY stays set (HSI always runs); HSERDY, PLLRDY and PLLI2SRDY follow HSEON, PLLON and
      PLLI2SON at once (the board has a crystal; start-up times are not modelled).
    - RCC_CFGR: SWS (bits 3:2) mirrors SW (bits 1:0), so code that switches SYSCLK sees the switch happen. The
      core keeps running at 16 MHz whatever is selected: clock speeds are not modelled (docs/sim.md).
    - RCC_AHB1ENR: CRCEN (bit 12) clocks the CRC unit (`crc_enabled`).
    - RCC_CSR: LSION/LSIRDY (LSIRDY follows LSION at once), the reset flags (set by `record_reset`, cleared by
      writing RMVF or by a power-on reset).
    """

    def __init__(self) -> None:
        self._words: Dict[int, int] = {}
        self.reset(power_on=True)
        self.record_reset(RESET_FLAGS_FOR_CAUSE["por"])

    @property
    def cr(self) -> int:
        return self._words.get(RCC_CR_OFFSET, 0)

    @property
    def cfgr(self) -> int:
        return self._words.get(RCC_CFGR_OFFSET, 0)

    @property
    def ahb1enr(self) -> int:
        return self._words.get(RCC_AHB1ENR_OFFSET, 0)

    @property
    def csr(self) -> int:
        return self._words.get(RCC_CSR_OFFSET, 0)

    @property
    def crc_enabled(self) -> bool:
        return bool(self.ahb1enr & RCC_AHB1ENR_CRCEN)

    @property
    def reset_flags(self) -> int:
        return self.csr & RCC_CSR_RESET_FLAGS

    def reset(self, power_on: bool = False) -> None:
        """A system reset restores every register; the reset flags survive all but a power-on reset (the
        chip then calls `record_reset` with the flags of this reset)."""
        flags = 0 if power_on else self.reset_flags
        self._words = dict(RCC_RESET_VALUES)
        self._words[RCC_CSR_OFFSET] = flags

    def record_reset(self, flags: int) -> None:
        """Set the reset flags of the reset that just happened (see RESET_FLAGS_FOR_CAUSE)."""
        self._words[RCC_CSR_OFFSET] = self.csr | (flags & RCC_CSR_RESET_FLAGS)

    def read(self, offset: int, size: int = 4) -> int:
        return _lane_read(self._words.get(offset & ~3, 0), offset, size)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        word_offset, merged, _ = _lane_merge(self._words.get(offset & ~3, 0), offset, value, size)
        if word_offset == RCC_CR_OFFSET:
            merged &= ~RCC_CR_READY_BITS
            merged |= RCC_CR_HSIRDY
            for on, ready in ((RCC_CR_HSEON, RCC_CR_HSERDY), (RCC_CR_PLLON, RCC_CR_PLLRDY),
                              (RCC_CR_PLLI2SON, RCC_CR_PLLI2SRDY)):
                if merged & on:
                    merged |= ready
        elif word_offset == RCC_CFGR_OFFSET:
            sw = merged & RCC_CFGR_SW_MASK
            merged = (merged & ~(RCC_CFGR_SW_MASK << RCC_CFGR_SWS_SHIFT)) | (sw << RCC_CFGR_SWS_SHIFT)
        elif word_offset == RCC_CSR_OFFSET:
            flags = 0 if merged & RCC_CSR_RMVF else self.reset_flags  # RMVF clears every reset flag
            lsion = merged & RCC_CSR_LSION
            merged = flags | lsion | (RCC_CSR_LSIRDY if lsion else 0)
        if 0 <= word_offset < RCC_SIZE:
            self._words[word_offset] = merged


# --- IWDG, RM0090 19 ---------------------------------------------------------------------------------------
IWDG_KR_OFFSET = 0x00
IWDG_PR_OFFSET = 0x04
IWDG_RLR_OFFSET = 0x08
IWDG_SR_OFFSET = 0x0C
IWDG_SR_PVU = 1 << 0
IWDG_SR_RVU = 1 << 1
IWDG_RLR_MAX = 0xFFF
# DS8626 (LSI oscillator characteristics): f_LSI 17 kHz min, 32 kHz typ, 47 kHz max. The model runs the LSI at
# `Iwdg.lsi_hz` (the `lsi=` fault; 32 kHz by default); firmware sizes PR/RLR for the nominal 32 kHz.
LSI_MIN_HZ = 17_000
LSI_MAX_HZ = 47_000
PS_PER_LSI_TICK = PS_PER_S // LSI_HZ  # 31.25 us at the nominal 32 kHz, exact in picoseconds
# PVU/RVU stay set while the value crosses into the VDD domain: "up to 5 RC 40 kHz cycles" (RM0090 19.4, IWDG_SR);
# the model uses 5 periods of its LSI.
IWDG_UPDATE_TICKS = 5
IWDG_UPDATE_PS = IWDG_UPDATE_TICKS * PS_PER_LSI_TICK


def lsi_tick_ps(lsi_hz: int = LSI_HZ) -> int:
    """One LSI period in picoseconds (rounded down; exact at 32 kHz)."""
    return PS_PER_S // lsi_hz


def iwdg_divider(prescaler: int) -> int:
    """PR 0..7 -> divider /4, /8, ... /256 (PR 6 and 7 are both /256)."""
    return 4 << min(prescaler & 7, 6)


def timeout_for(prescaler: int, reload: int, lsi_hz: int = LSI_HZ) -> int:
    """Picoseconds from a reload until the counter reaches 0 (RM0090 19.3.3 timeout table at 32 kHz: /4 with
    0xFFF is 512 ms); a faster or slower LSI (`lsi_hz`) shortens or stretches it in proportion."""
    return iwdg_divider(prescaler) * ((reload & IWDG_RLR_MAX) + 1) * lsi_tick_ps(lsi_hz)


def iwdg_settings_for(timeout_ms: float) -> Tuple[int, int]:
    """(PR, RLR) giving the timeout closest to `timeout_ms` with the finest prescaler that reaches it."""
    wanted_ps = round(timeout_ms * PS_PER_MS)
    for prescaler in range(7):
        tick_ps = iwdg_divider(prescaler) * PS_PER_LSI_TICK
        if wanted_ps <= tick_ps * (IWDG_RLR_MAX + 1):
            reload = max(1, round(wanted_ps / tick_ps)) - 1
            return prescaler, reload
    return 6, IWDG_RLR_MAX  # the longest the IWDG can do: 32.768 s


class Iwdg:
    """The independent watchdog, clocked by the LSI (`lsi_hz`, 32 kHz nominal), counted lazily from virtual time.

    The chip calls `sync(now_ps, counting)` before every register access and whenever it advances time,
    saying whether the counter ran over the interval since the previous sync (it does not while the core is
    halted and DBGMCU_APB1_FZ.DBG_IWDG_STOP is set). Register writes act at the time of the last sync.
    `expiry_ps(counting)` tells the chip when to schedule the reset; `expired` says it is due. Once started the
    IWDG cannot be stopped except by a reset: the chip syncs to the reset moment, then calls `reset()` (and
    `hardware_start()` when WDG_SW = 0), so the new countdown starts at the reset.
    The LSI is not tied to RCC_CSR.LSION: starting the IWDG forces the LSI on (RM0090 19.3.2).

    PR and RLR take a write only while the key 0x5555 is in effect and the previous update of that register
    has finished: RM0090 19.4.4 (IWDG_SR) says the prescaler (reload) value "can be updated only when PVU
    (RVU) bit is reset", so a write while PVU (RVU) is set is ignored.
    """

    def __init__(self, lsi_hz: int = LSI_HZ) -> None:
        self.lsi_hz = lsi_hz
        self._last_ps = 0
        self.reset()

    def reset(self) -> None:
        """A system reset stops the IWDG and restores PR = /4, RLR = 0xFFF."""
        self.prescaler = 0
        self.reload = IWDG_RLR_MAX
        self.running = False
        self.expired = False
        self._remaining_ps = 0  # time left until the counter reaches 0, as of _last_ps
        self._access = False  # 0x5555 written: PR and RLR writable
        self._pvu_until_ps = -1
        self._rvu_until_ps = -1

    def hardware_start(self) -> None:
        """WDG_SW = 0 in the option bytes: the IWDG runs from reset with PR/RLR at their reset values."""
        self.start()

    def start(self, prescaler: Optional[int] = None, reload: Optional[int] = None) -> None:
        """Start counting from the reload value (KR = 0xCCCC), optionally setting PR/RLR first."""
        if prescaler is not None:
            self.prescaler = prescaler & 7
        if reload is not None:
            self.reload = reload & IWDG_RLR_MAX
        self.running = True
        self._reload_counter()

    def _reload_counter(self) -> None:
        self._remaining_ps = timeout_for(self.prescaler, self.reload, self.lsi_hz)

    @property
    def timeout_ps(self) -> int:
        return timeout_for(self.prescaler, self.reload, self.lsi_hz)

    @property
    def _update_ps(self) -> int:
        return IWDG_UPDATE_TICKS * lsi_tick_ps(self.lsi_hz)

    @property
    def prescaler_updating(self) -> bool:
        """IWDG_SR.PVU: a PR write is still crossing into the VDD domain."""
        return self._last_ps < self._pvu_until_ps

    @property
    def reload_updating(self) -> bool:
        """IWDG_SR.RVU: an RLR write is still crossing into the VDD domain."""
        return self._last_ps < self._rvu_until_ps

    @property
    def counter(self) -> int:
        """IWDG down-counter value (not a register on this part; for inspection and tests)."""
        if not self.running:
            return self.reload
        tick = iwdg_divider(self.prescaler) * lsi_tick_ps(self.lsi_hz)
        return max(0, -(-self._remaining_ps // tick) - 1)

    def sync(self, now_ps: int, counting: bool) -> None:
        if self.running and counting and not self.expired:
            self._remaining_ps -= now_ps - self._last_ps
            if self._remaining_ps <= 0:
                self._remaining_ps = 0
                self.expired = True
        self._last_ps = now_ps

    def expiry_ps(self, counting: bool) -> Optional[int]:
        """When the counter reaches 0 if it keeps counting; None if it is stopped or frozen."""
        if not self.running or not counting:
            return None
        return self._last_ps + self._remaining_ps

    def read(self, offset: int, size: int = 4) -> int:
        word_offset = offset & ~3
        if word_offset == IWDG_PR_OFFSET:
            word = self.prescaler
        elif word_offset == IWDG_RLR_OFFSET:
            word = self.reload
        elif word_offset == IWDG_SR_OFFSET:
            word = ((IWDG_SR_PVU if self.prescaler_updating else 0)
                    | (IWDG_SR_RVU if self.reload_updating else 0))
        else:
            word = 0  # KR is write-only
        return _lane_read(word, offset, size)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        word_offset = offset & ~3
        if word_offset == IWDG_KR_OFFSET:
            key = _lane_merge(0, offset, value, size)[1] & 0xFFFF
            self._access = key == IWDG_KEY_ACCESS  # any other key write-protects PR/RLR again (19.3.4)
            if key == IWDG_KEY_RELOAD:
                self._reload_counter()
            elif key == IWDG_KEY_START:
                self.start()
        elif word_offset == IWDG_PR_OFFSET and self._access and not self.prescaler_updating:
            old_tick = iwdg_divider(self.prescaler)
            self.prescaler = _lane_merge(self.prescaler, offset, value, size)[1] & 7
            # RM0090 19.4.2: the prescaler divides the LSI that clocks the down-counter, so a new PR changes
            # the speed of a countdown already running (the counter value is kept); only RLR waits for a
            # reload. The Keil FLM relies on this to slow a hardware watchdog without reloading it.
            if self.running:
                self._remaining_ps = self._remaining_ps * iwdg_divider(self.prescaler) // old_tick
            self._pvu_until_ps = self._last_ps + self._update_ps
        elif word_offset == IWDG_RLR_OFFSET and self._access and not self.reload_updating:
            self.reload = _lane_merge(self.reload, offset, value, size)[1] & IWDG_RLR_MAX
            self._rvu_until_ps = self._last_ps + self._update_ps



class WatchdogClock:
    """The IWDG as the chip clocks it: counted lazily up to the virtual clock while `counting`.

    The chip sets `counting` (`set_counting`) whenever the core halts, resumes or resets, NRST changes or
    DBGMCU_APB1_FZ.DBG_IWDG_STOP changes: the IWDG stops while NRST holds the chip in reset, and while the core
    is halted with DBG_IWDG_STOP set (RM0090 38.16.4). Every change and every register access first brings the
    counter up to now with the setting that held until now. The bus reaches the IWDG's registers through
    `read`/`write`.
    """

    def __init__(self, iwdg: Iwdg, clock: VirtualClock) -> None:
        self.iwdg = iwdg
        self._clock = clock
        self.counting = True

    def sync(self) -> None:
        self.iwdg.sync(self._clock.now_ps, self.counting)

    def set_counting(self, counting: bool) -> None:
        self.sync()
        self.counting = counting

    def read(self, offset: int, size: int) -> int:
        self.sync()
        return self.iwdg.read(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        self.sync()
        self.iwdg.write(offset, value, size)

    def expiry_ps(self) -> Optional[int]:
        """When the IWDG resets the chip if nothing refreshes it; None while stopped or frozen."""
        return self.iwdg.expiry_ps(self.counting)

    def counting_timeout_ps(self) -> Optional[int]:
        """The IWDG timeout while the IWDG runs and counts; None otherwise."""
        if self.iwdg.running and self.counting:
            return self.iwdg.timeout_ps
        return None

# --- CRC unit, RM0090 4 ------------------------------------------------------------------------------------
CRC_DR_OFFSET = 0x00
CRC_IDR_OFFSET = 0x04
CRC_CR_OFFSET = 0x08


class CrcUnit:
    """CRC_DR/IDR/CR. A 32-bit write to DR feeds one word (see f4load.crc); reading DR gives the result.

    `enabled()` is RCC_AHB1ENR.CRCEN: while the clock is off the registers read 0 and writes are ignored, as
    for any unclocked STM32 peripheral.

    Sub-word DR writes (a modelling choice: RM0090 4.3 defines DR as a 32-bit register only): the Cortex-M4
    replicates a byte or halfword store across all byte lanes of the AHB write data, and the unit takes the
    whole data bus, so a byte write of 0xAB feeds the word 0xABABABAB and a halfword 0x1234 feeds 0x12341234.

    `broken` (the `crc-broken` fault): the unit computes nothing, DR keeps 0xFFFF_FFFF (a clone without a
    working CRC unit, or a damaged one); IDR and the clock gate behave as usual.
    """

    def __init__(self, enabled: Callable[[], bool], broken: bool = False) -> None:
        self.enabled = enabled
        self.broken = broken  # the crc-broken fault: DR keeps its reset value whatever is fed
        self.value = CRC_INIT
        self.idr = 0

    def reset(self) -> None:
        """A system reset: DR back to 0xFFFF_FFFF, IDR to 0."""
        self.value = CRC_INIT
        self.idr = 0

    def feed(self, word: int) -> None:
        if not self.broken:
            self.value = stm32_crc32_word(word, self.value)

    def read(self, offset: int, size: int = 4) -> int:
        if not self.enabled():
            return 0
        word_offset = offset & ~3
        word = {CRC_DR_OFFSET: self.value, CRC_IDR_OFFSET: self.idr}.get(word_offset, 0)  # CR reads 0
        return _lane_read(word, offset, size)

    def write(self, offset: int, value: int, size: int = 4) -> None:
        if not self.enabled():
            return
        word_offset = offset & ~3
        if word_offset == CRC_DR_OFFSET:
            narrow = value & ((1 << (8 * size)) - 1)
            self.feed(narrow * {1: 0x0101_0101, 2: 0x0001_0001, 4: 1}[size])
        elif word_offset == CRC_IDR_OFFSET:
            if offset & 3 == 0:
                self.idr = value & 0xFF  # IDR is 8 bits wide
        elif word_offset == CRC_CR_OFFSET:
            if _lane_merge(0, offset, value, size)[1] & CRC_CR_RESET:
                self.value = CRC_INIT  # IDR is not affected by RESET (RM0090 4.4.3)
