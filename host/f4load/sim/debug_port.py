"""The SW-DP of the virtual STM32F407: the one way a probe front-end reaches the chip.

`DebugPort` is the SW-DP (DPv1, IDR 0x2BA0_1477) with one AHB-AP (APSEL 0, IDR 0x2477_0011); APs 1-3 read IDR 0.
The probe front-ends - the in-process pyocd plugin (`probe.py`) and the virtual ST-Link firmware (`stlink.py`,
behind the TCP server `server.py`) - hold a `DebugAccess`, which says all a front-end may do: DP/AP registers,
memory through the AHB-AP, the NRST pin, the target voltage, and time passing. The port itself reaches the chip
only through `DebugTarget` (the debugger's bus, NRST, the supply, the power-cycle count, time), never its core.
Sources: ARM Debug Interface v5 (DP/AP registers, sticky errors), RM0090 38.4-38.5 (the STM32F4's SW-DP and
AHB-AP). See `DebugPort`'s docstring for the register protocol.
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Tuple, TypeVar

from f4load.registers import ROM_TABLE_BASE
from f4load.sim.flash import BusFault, BusWait

if TYPE_CHECKING:
    from f4load.sim.clock import VirtualClock

T = TypeVar("T")

DP_IDR_VALUE = 0x2BA0_1477  # SW-DP v1 of the Cortex-M4 (ARM JEP106, version 2, part 0xBA01)
AHB_AP_IDR = 0x2477_0011  # AHB-AP, ARM, revision 2
AHB_AP_BASE_VALUE = ROM_TABLE_BASE | 0x3  # format 1, debug entry present

# DP registers (A[3:2]); ADIv5.
DP_IDR = 0x0  # read
DP_ABORT = 0x0  # write
DP_CTRL_STAT = 0x4
DP_SELECT = 0x8  # write
DP_RESEND = 0x8  # read
DP_RDBUFF = 0xC  # read

CSYSPWRUPACK = 1 << 31
CSYSPWRUPREQ = 1 << 30
CDBGPWRUPACK = 1 << 29
CDBGPWRUPREQ = 1 << 28
CDBGRSTACK = 1 << 27
CDBGRSTREQ = 1 << 26
WDATAERR = 1 << 7
READOK = 1 << 6
STICKYERR = 1 << 5
STICKYCMP = 1 << 4
STICKYORUN = 1 << 1
CTRL_STAT_WRITABLE = CSYSPWRUPREQ | CDBGPWRUPREQ | CDBGRSTREQ | 0x0000_3F0D  # + TRNCNT/MASKLANE/TRNMODE/ORUNDETECT

ABORT_DAPABORT = 1 << 0
ABORT_STKCMPCLR = 1 << 1
ABORT_STKERRCLR = 1 << 2
ABORT_WDERRCLR = 1 << 3
ABORT_ORUNERRCLR = 1 << 4

# AHB-AP registers.
AP_CSW = 0x00
AP_TAR = 0x04
AP_DRW = 0x0C
AP_BD0 = 0x10
AP_CFG = 0xF4
AP_BASE = 0xF8
AP_IDR = 0xFC
CSW_SIZE_MASK = 0x7
CSW_ADDRINC_SHIFT = 4
CSW_ADDRINC_MASK = 0x3 << 4
CSW_DEVICEEN = 1 << 6
CSW_WRITABLE = 0xFF00_0F37  # DbgSwEnable, Prot, Mode, AddrInc, Size
CSW_RESET = 0x0300_0040 | 0x2  # HPROT data+privileged, word size (DeviceEn is read-only 1)
TAR_WRAP = 0x1000  # auto-increment wraps within 4 KB (ADIv5 guarantees only 1 KB; the model allows 4 KB)



class DebugTarget(Protocol):
    """The chip as its debug port reaches it (`chip.Chip`): the AHB behind the AHB-AP, the pins and the supply
    beside the SWD wire, and time."""

    clock: VirtualClock
    debugger_wait_limit_ps: Optional[int]  # a stall longer than this is a WAIT the probe gives up on
    nrst_asserted: bool  # the NRST pin held low
    debugger_attached: bool  # the RDP level 1 intrusion rule

    @property
    def power_cycles(self) -> int:
        """Power-level resets so far: each one powers the debug domain down."""

    @property
    def supply_voltage(self) -> float: ...

    def bus_read(self, address: int, size: int) -> int: ...

    def bus_write(self, address: int, size: int, value: int) -> None: ...

    def bus_read_block(self, address: int, length: int) -> bytes: ...

    def bus_write_block(self, address: int, data: bytes) -> None: ...

    def advance(self, ps: int) -> None: ...

    def run_until_halted(self, limit_ps: int) -> bool: ...


class DebugAccess(Protocol):
    """What a probe front-end may do with the target, and all it may do: the in-process pyocd probe
    (probe.py) and the ST-Link firmware (stlink.py) reach the chip only through this. `DebugPort` implements
    it; see its docstring for the rules."""

    wait_limit_ps: Optional[int]  # how long the probe keeps retrying a WAIT (None: for ever)
    nrst: bool  # the NRST pin the probe drives: True while held low

    # --- the SWD wire: DP and AP registers ------------------------------------------------------------------
    def read_dp(self, addr: int) -> int: ...

    def write_dp(self, addr: int, value: int) -> None: ...

    @property
    def powered(self) -> bool:
        """CTRL/STAT: the debug domain is powered up (the AP can be used)."""

    def read_ap(self, addr: int) -> int:
        """An AP register, `addr` = (APSEL << 24) | register, or the raw form with SELECT."""

    def write_ap(self, addr: int, value: int) -> None: ...

    def ap_read(self, apsel: int, reg: int) -> int: ...

    def ap_write(self, apsel: int, reg: int, value: int) -> None: ...

    # --- memory through the AHB-AP, as a probe's firmware does it in one go -----------------------------------
    def read_memory(self, address: int, length: int, size: int = 4, increment: bool = True) -> bytes: ...

    def write_memory(self, address: int, data: bytes, size: int = 4, increment: bool = True) -> None: ...

    # --- beside the wire: the debugger's connection, the supply, time ------------------------------------------
    @property
    def target_voltage(self) -> float: ...

    def attach(self) -> None: ...

    def detach(self) -> None: ...

    def pass_time(self, ps: int) -> None:
        """The probe's own time passes for the chip (its core runs, its flash works)."""

    def run_until_halted(self, limit_ps: int) -> bool: ...

    @property
    def now_ps(self) -> int: ...


class DebugPort:
    """The SW-DP and AHB-AP register model that the probe front-ends drive (`DebugAccess`), on a chip it
    reaches through `DebugTarget`.

    `read_dp(addr)`/`write_dp(addr, value)`: DP registers by A[3:2] (0x0 IDR/ABORT, 0x4 CTRL/STAT, 0x8 SELECT,
    0xC RDBUFF); bank bits above bit 3 (MANAGED_DPBANKSEL) are ignored (DPv1 has no banked registers that
    matter here).

    `read_ap(addr)`/`write_ap(addr, value)`: with pyocd's MANAGED_AP_SELECTION, `addr` is `(APSEL << 24) |
    register`; an address with no bits above 0xF is the raw form, and APSEL/APBANKSEL come from SELECT.

    A power-level reset of the chip (POR, BOR/brown-out; `chip.power_cycles` changes) resets the SW-DP as on
    silicon: CTRL/STAT (power-up requests and ACKs, sticky flags), SELECT, the AHB-AP's CSW and TAR go back to
    their reset values, so AP accesses fail until the debugger powers the debug domain up again.

    Power-up handshake: CTRL/STAT.CSYSPWRUPACK/CDBGPWRUPACK follow their requests at once. An AP access
    before both are acknowledged, or while STICKYERR is set, fails. A memory access through DRW/BDn that the
    bus rejects sets STICKYERR and raises BusFault (the probe turns that into pyocd's TransferFaultError); a
    write of ABORT.STKERRCLR clears it. AP reads are not posted: the value is returned at once, and RDBUFF
    repeats the last AP read.

    What a probe's firmware does with the AHB-AP in one go is offered whole (`read_memory`/`write_memory`: CSW
    size, TAR, a run of DRW transfers), with the same checks and sticky-error rules as the register path; a bus
    error raises BusFault carrying the `address` of the transfer that failed. An access the bus stalls (a flash
    read or store while BSY=1) completes when the stall ends, time passing; with `wait_limit_ps` set, a stall
    longer than that raises BusWait instead and nothing is transferred: the SW-DP answered WAIT for as long as
    the probe retries (RM0090 3.6: the AHB stalls while the flash is busy; ADIv5: the DP answers WAIT).

    Beside the wire: `nrst` (the reset pin the probe drives), `target_voltage` (what the probe measures on
    VDD), `attach`/`detach` (a debugger is connected: the RDP level 1 intrusion rule, RM0090 3.7.3) and
    `pass_time` (the probe's own time: the link, a reset pulse; the core runs meanwhile).
    """

    def __init__(self, chip: DebugTarget) -> None:
        self.chip = chip
        self._power_cycles = chip.power_cycles
        self.wait_limit_ps: Optional[int] = None
        self.power_down()

    def power_down(self) -> None:
        """The SW-DP's reset state: debug domain powered down, no sticky flags, SELECT/CSW/TAR reset."""
        self.ctrl_stat = 0
        self.select = 0
        self.rdbuff = 0
        self.csw = CSW_RESET
        self.tar = 0

    def _follow_power(self) -> None:
        """A POR/BOR since the last access powered the debug domain down (RM0090 38: the SW-DP is reset by a
        power-on reset, not by a system reset)."""
        if self.chip.power_cycles != self._power_cycles:
            self._power_cycles = self.chip.power_cycles
            self.power_down()

    # --- DP -------------------------------------------------------------------------------------------------
    def read_dp(self, addr: int) -> int:
        self._follow_power()
        reg = addr & 0xC
        if reg == DP_IDR:
            return DP_IDR_VALUE
        if reg == DP_CTRL_STAT:
            return self.ctrl_stat
        if reg == DP_RESEND:
            return self.rdbuff
        return self.rdbuff  # RDBUFF

    def write_dp(self, addr: int, value: int) -> None:
        self._follow_power()
        reg = addr & 0xC
        value &= 0xFFFF_FFFF
        if reg == DP_ABORT:
            if value & ABORT_STKERRCLR:
                self.ctrl_stat &= ~STICKYERR
            if value & ABORT_STKCMPCLR:
                self.ctrl_stat &= ~STICKYCMP
            if value & ABORT_WDERRCLR:
                self.ctrl_stat &= ~WDATAERR
            if value & ABORT_ORUNERRCLR:
                self.ctrl_stat &= ~STICKYORUN
        elif reg == DP_CTRL_STAT:
            sticky = self.ctrl_stat & (STICKYERR | STICKYCMP | STICKYORUN | WDATAERR | READOK)
            stored = value & CTRL_STAT_WRITABLE
            acks = ((CSYSPWRUPACK if stored & CSYSPWRUPREQ else 0) | (CDBGPWRUPACK if stored & CDBGPWRUPREQ else 0)
                    | (CDBGRSTACK if stored & CDBGRSTREQ else 0))
            self.ctrl_stat = stored | acks | sticky
        elif reg == DP_SELECT:
            self.select = value
        # RDBUFF is read-only: a write is ignored

    @property
    def powered(self) -> bool:
        return (self.ctrl_stat & (CSYSPWRUPACK | CDBGPWRUPACK)) == (CSYSPWRUPACK | CDBGPWRUPACK)

    # --- AP -------------------------------------------------------------------------------------------------
    def _decode_ap(self, addr: int) -> Tuple[int, int]:
        if addr & ~0xF:
            return (addr >> 24) & 0xFF, addr & 0xFC
        return (self.select >> 24) & 0xFF, (self.select & 0xF0) | (addr & 0xC)

    def _check_ap_access(self) -> None:
        self._follow_power()
        if not self.powered:
            self.ctrl_stat |= STICKYERR
            raise BusFault("AP access before the debug power-up handshake (CTRL/STAT CxxxPWRUPACK)")
        if self.ctrl_stat & STICKYERR:
            raise BusFault("AP access while CTRL/STAT.STICKYERR is set (clear it with ABORT.STKERRCLR)")

    def read_ap(self, addr: int) -> int:
        return self.ap_read(*self._decode_ap(addr))

    def write_ap(self, addr: int, value: int) -> None:
        self.ap_write(*self._decode_ap(addr), value)

    def ap_read(self, apsel: int, reg: int) -> int:
        """Read AP register `reg` (A[7:2]) of AP `apsel`, as a probe that selects the AP itself does."""
        self._check_ap_access()
        value = self._read_ap(apsel, reg & 0xFC)
        self.rdbuff = value
        return value

    def ap_write(self, apsel: int, reg: int, value: int) -> None:
        self._check_ap_access()
        if apsel == 0:
            self._write_ahb_ap(reg & 0xFC, value & 0xFFFF_FFFF)

    def _read_ap(self, apsel: int, reg: int) -> int:
        if apsel != 0:
            return 0  # APs 1-3 are absent: IDR 0 tells the debugger so
        if reg == AP_CSW:
            return self.csw | CSW_DEVICEEN
        if reg == AP_TAR:
            return self.tar
        if reg == AP_DRW:
            return self._drw_read()
        if AP_BD0 <= reg < AP_BD0 + 0x10:
            return self._memory(lambda: self.chip.bus_read((self.tar & ~0xF) + (reg - AP_BD0), 4))
        if reg == AP_CFG:
            return 0  # little-endian, no large data/address
        if reg == AP_BASE:
            return AHB_AP_BASE_VALUE
        if reg == AP_IDR:
            return AHB_AP_IDR
        return 0

    def _write_ahb_ap(self, reg: int, value: int) -> None:
        if reg == AP_CSW:
            self.csw = value & CSW_WRITABLE
        elif reg == AP_TAR:
            self.tar = value
        elif reg == AP_DRW:
            self._drw_write(value)
        elif AP_BD0 <= reg < AP_BD0 + 0x10:
            address = (self.tar & ~0xF) + (reg - AP_BD0)
            self._memory(lambda: self.chip.bus_write(address, 4, value))

    def _transfer_size(self) -> int:
        size = {0: 1, 1: 2, 2: 4}.get(self.csw & CSW_SIZE_MASK)
        if size is None:
            self.ctrl_stat |= STICKYERR
            raise BusFault(f"AHB-AP CSW.Size {self.csw & CSW_SIZE_MASK} is not supported (8/16/32 bits only)")
        return size

    def _memory(self, access: Callable[[], T]) -> T:
        """One AHB access: a bus error sets STICKYERR; a stall longer than `wait_limit_ps` is a WAIT (no
        sticky flag: the DP answered WAIT, the transfer did not happen)."""
        chip = self.chip
        chip.debugger_wait_limit_ps = self.wait_limit_ps
        try:
            return access()
        except BusWait:
            raise
        except BusFault:
            self.ctrl_stat |= STICKYERR
            raise
        finally:
            chip.debugger_wait_limit_ps = None

    def _drw_read(self) -> int:
        size = self._transfer_size()
        address = self.tar
        value = self._memory(lambda: self.chip.bus_read(address, size))
        self._increment_tar(size)
        return (value << ((address & 3) * 8)) & 0xFFFF_FFFF  # data on the byte lanes of the address

    def _drw_write(self, value: int) -> None:
        size = self._transfer_size()
        address = self.tar
        lane_value = (value >> ((address & 3) * 8)) & ((1 << (8 * size)) - 1)
        self._memory(lambda: self.chip.bus_write(address, size, lane_value))
        self._increment_tar(size)

    def _increment_tar(self, size: int) -> None:
        if (self.csw & CSW_ADDRINC_MASK) >> CSW_ADDRINC_SHIFT in (1, 2):  # single or packed
            self.tar = (self.tar & ~(TAR_WRAP - 1)) | ((self.tar + size) & (TAR_WRAP - 1))

    # --- what a probe's firmware does with the AHB-AP in one go ----------------------------------------------
    def read_memory(self, address: int, length: int, size: int = 4, increment: bool = True) -> bytes:
        """`length` bytes from `address` in `size`-byte AHB transfers (CSW.Size, TAR, DRW reads), the address
        incrementing (or not: a FIFO register read again and again). BusFault (with `address`) or BusWait."""
        self._prepare_transfers(address, length, size)
        chip = self.chip
        if not increment:
            return b"".join(self._memory(lambda: chip.bus_read(address, size)).to_bytes(size, "little")
                            for _ in range(length // size))
        if size == 4:
            data = self._memory(lambda: chip.bus_read_block(address, length))
        else:
            data = b"".join(self._memory(partial(chip.bus_read, at, size)).to_bytes(size, "little")
                            for at in range(address, address + length, size))
        self._after_transfers(address + length - size, size, int.from_bytes(data[-size:], "little"))
        return data

    def write_memory(self, address: int, data: bytes, size: int = 4, increment: bool = True) -> None:
        """`data` to `address` in `size`-byte AHB transfers (CSW.Size, TAR, DRW writes), the address
        incrementing (or not). BusFault (with `address` of the transfer that failed) or BusWait."""
        self._prepare_transfers(address, len(data), size)
        chip = self.chip
        if increment and size == 4:
            self._memory(lambda: chip.bus_write_block(address, bytes(data)))
        else:
            for offset in range(0, len(data), size):
                at = address + offset if increment else address
                self._memory(partial(chip.bus_write, at, size, int.from_bytes(data[offset:offset + size], "little")))
        self._after_transfers(address + len(data) - size if increment else address, size, None)

    def _prepare_transfers(self, address: int, length: int, size: int) -> None:
        self._check_ap_access()
        if size not in (1, 2, 4) or address % size or length % size or length <= 0:
            raise BusFault(f"{length} bytes at {address:#010x} in {size}-byte transfers: not aligned")
        self.csw = (self.csw & ~(CSW_SIZE_MASK | CSW_ADDRINC_MASK)) | {1: 0, 2: 1, 4: 2}[size] | (
            1 << CSW_ADDRINC_SHIFT)
        self.tar = address

    def _after_transfers(self, last_address: int, size: int, last_read: Optional[int]) -> None:
        """TAR points past the last transfer (within its wrap), RDBUFF holds the last read."""
        self.tar = last_address
        self._increment_tar(size)
        if last_read is not None:
            self.rdbuff = (last_read << ((last_address & 3) * 8)) & 0xFFFF_FFFF

    # --- beside the wire ----------------------------------------------------------------------------------------
    @property
    def nrst(self) -> bool:
        """The NRST pin as the probe drives it: True while held low (a pin reset that lasts until released)."""
        return bool(self.chip.nrst_asserted)

    @nrst.setter
    def nrst(self, asserted: bool) -> None:
        self.chip.nrst_asserted = asserted

    @property
    def target_voltage(self) -> float:
        """VDD as the probe measures it (an ST-Link's TVCC input)."""
        return self.chip.supply_voltage

    def attach(self) -> None:
        """A debugger connects (SWD): under RDP level 1 the flash is then closed to every read (RM0090 3.7.3)."""
        self._follow_power()
        self.chip.debugger_attached = True

    def detach(self) -> None:
        self.chip.debugger_attached = False

    def pass_time(self, ps: int) -> None:
        """Let `ps` of virtual time pass for the chip (its core runs, its flash works): the probe's link
        transfers, a reset pulse it holds."""
        self.chip.advance(ps)

    def run_until_halted(self, limit_ps: int) -> bool:
        """Let time pass until the core halts or `limit_ps` has passed (for a host whose link costs nothing,
        which learns of a halt the moment it happens); True if the core is halted."""
        return bool(self.chip.run_until_halted(limit_ps))

    @property
    def now_ps(self) -> int:
        return int(self.chip.clock.now_ps)


