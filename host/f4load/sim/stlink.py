"""The firmware of a virtual ST-Link: the USB command set of an ST-Link/V2-1 or an STLINK-V3, in front of the
virtual STM32F407's debug port.

`StLinkFirmware.command(cdb, out_data, in_length)` runs one USB command - the 16-byte command block, its OUT
data phase, the number of bytes the host reads back - and returns exactly `in_length` bytes, whatever the
input (an unknown or malformed command gets the status a probe gives, never an exception). It reaches the
chip only through its debug port (`debug.DebugAccess`, which `debug.DebugPort` implements): DP and AP
registers, memory through the AHB-AP, the NRST pin, the target voltage and time passing. Every command is one
USB transaction and costs its `usb_link.UsbLink` cost on the chip's clock: the latency and USB payload before
it acts, its SWD transfers after.

The command set is the one OpenOCD 0.12 (hla `stlink` and DAP-direct `stlink-dap` drivers) and pyOCD use; the
layouts and status codes are digested in `../shared/reference/stlink.md` (sections 2 and 3). In short:

| bytes | command | reply |
|---|---|---|
| F1 / FB | GET_VERSION / GET_VERSION_EX | version word, VID, PID (no status) |
| F5, F3 07, F4 01 | GET_CURRENT_MODE, leave DFU, leave SWIM | mode byte / nothing |
| F7 | GET_TARGET_VOLTAGE | two ADC samples: V = 2 x a1 x 1.2 / a0 |
| F2 30 A3, F2 21 | enter SWD, leave debug mode | status / nothing |
| F2 31, F2 32 | READ_IDCODES (DPIDR), RESETSYS (AIRCR.SYSRESETREQ) | status (+ value) |
| F2 33 / 34 / 3A | core registers through DCRSR/DCRDR (REGSEL), all registers | status (+ values) |
| F2 35 / 36 | 32-bit write / read of a debug register (any address) | status (+ value) |
| F2 07 08 0C 0D 47 48 50 54 | memory 32/8/16-bit read/write, 32-bit without increment | data; status by F2 3E |
| F2 3B / 3E | last read/write status (GETLASTRWSTATUS2: status, fault address) | status (+ address) |
| F2 3C | NRST low / high / pulse | status |
| F2 43 / 44, F2 61 / 62 / 63 | SWD/JTAG clock divisor (V2); V3 com frequency set/get, prescaler | status (+ kHz) |
| F2 45 / 46 | DP or AP register read / write (port 0xFFFF = DP) | status (+ value) |
| F2 4B / 4C | open / close an AP | status |
| F2 51 / 52 | RW_MISC batch of AP word reads/writes (OpenOCD stlink-dap) | nothing / data + statuses |
| F2 40 / 41 / 42 | SWO trace start / stop / bytes waiting (no trace is produced) | status / count |
| F2 56 | board identifiers (none: zeros) | status + 4 bytes |

Modes: a freshly powered ST-Link reports DFU mode; leaving DFU gives mass-storage mode; entering SWD gives debug
mode, in which alone target commands run (elsewhere they answer 0x05, "no device connected"). Entering SWD
notes the debugger on the chip (DebugPort.attach), clears the DP's sticky flags and powers the debug domain up
(CTRL/STAT CSYSPWRUPREQ|CDBGPWRUPREQ), as the client expects: OpenOCD reads CPUID through the AHB-AP right
after it. Leaving debug mode detaches and closes the APs.

Model choices (not in either client's sources):
- A memory command that faults records SWD_AP_FAULT (0x11) and the address of the failing transfer for
  GETLASTRWSTATUS2; a bus stall longer than the firmware's WAIT retries (5 WAIT answers of 13 SWD clocks each)
  records SWD_AP_WAIT (0x10). High-level commands first clear a STICKYERR left by an earlier fault (the hla
  driver has no other way to recover); DAP register commands leave the DP exactly as the client drives it.
- Bad lengths or alignment: JTAG_ALIGNMENT_ERROR (0x0A) for unaligned 16/32-bit transfers, JTAG_CMD_ERROR
  (0x08) for a length over the firmware's limit (6144 bytes; 8-bit: 64 on the V2-1, 512 on the V3) or a data
  phase of the wrong size; BAD_AP (0x1D) for an AP number beyond the firmware's (8 here).
- An unknown command answers JTAG_UNKNOWN_CMD (0x42) in its first byte; JTAG is not modelled (entering JTAG
  answers 0x04, unknown JTAG chain). INIT_AP is not required before an AP access of AP 0 (the sources do not
  say what the firmware does without it; all clients send it).
- A NRST pulse holds the pin low for 1 ms.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

from f4load.registers import DCRDR, DCRSR, DHCSR, SCS_AIRCR
from f4load.sim.clock import PS_PER_MS, PS_PER_S
from f4load.sim.debug_port import (
    ABORT_ORUNERRCLR,
    ABORT_STKCMPCLR,
    ABORT_STKERRCLR,
    ABORT_WDERRCLR,
    CDBGPWRUPREQ,
    CSYSPWRUPREQ,
    DP_ABORT,
    DP_CTRL_STAT,
    DP_IDR,
    STICKYERR,
    DebugAccess,
)
from f4load.sim.flash import BusFault, BusWait
from f4load.sim.usb_link import USB_LINKS, UsbLink

ST_VID = 0x0483

# --- top-level commands (byte 0) -------------------------------------------------------------------------
GET_VERSION = 0xF1
DEBUG_COMMAND = 0xF2
DFU_COMMAND = 0xF3
SWIM_COMMAND = 0xF4
GET_CURRENT_MODE = 0xF5
GET_TARGET_VOLTAGE = 0xF7
GET_VERSION_EX = 0xFB
DFU_EXIT = 0x07
SWIM_EXIT = 0x01

MODE_DFU, MODE_MASS, MODE_DEBUG = 0, 1, 2

# --- DEBUG_COMMAND sub-commands (byte 1) ------------------------------------------------------------------
READMEM_32BIT = 0x07
WRITEMEM_32BIT = 0x08
READMEM_8BIT = 0x0C
WRITEMEM_8BIT = 0x0D
EXIT = 0x21
ENTER = 0x30
READ_IDCODES = 0x31
RESETSYS = 0x32
READREG = 0x33
WRITEREG = 0x34
WRITEDEBUGREG = 0x35
READDEBUGREG = 0x36
READALLREGS = 0x3A
GETLASTRWSTATUS = 0x3B
DRIVE_NRST = 0x3C
GETLASTRWSTATUS2 = 0x3E
START_TRACE_RX = 0x40
STOP_TRACE_RX = 0x41
GET_TRACE_NB = 0x42
SWD_SET_FREQ = 0x43
JTAG_SET_FREQ = 0x44
READ_DAP_REG = 0x45
WRITE_DAP_REG = 0x46
READMEM_16BIT = 0x47
WRITEMEM_16BIT = 0x48
INIT_AP = 0x4B
CLOSE_AP_DBG = 0x4C
WRITEMEM_32BIT_NO_ADDR_INC = 0x50
RW_MISC_OUT = 0x51
RW_MISC_IN = 0x52
READMEM_32BIT_NO_ADDR_INC = 0x54
GET_BOARD_IDENTIFIERS = 0x56
SET_COM_FREQ = 0x61
GET_COM_FREQ = 0x62
SWITCH_STLINK_FREQ = 0x63

ENTER_SWD = 0xA3
ENTER_JTAG = 0xA4
NRST_LOW, NRST_HIGH, NRST_PULSE = 0, 1, 2
DP_PORT = 0xFFFF

# RW_MISC item opcodes (OpenOCD stlink_usb_misc_rw_segment).
RW_MISC_ADDRESS, RW_MISC_WRITE, RW_MISC_READ, RW_MISC_APNUM = 1, 2, 3, 5

# --- status codes (first byte of a reply; GETLASTRWSTATUS2) ---------------------------------------------------
OK = 0x80
UNKNOWN_JTAG_CHAIN = 0x04
NO_DEVICE_CONNECTED = 0x05
CMD_ERROR = 0x08
ALIGNMENT_ERROR = 0x0A
SWD_AP_WAIT = 0x10
SWD_AP_FAULT = 0x11
BAD_AP = 0x1D
CONF_CHANGED = 0x40
UNKNOWN_CMD = 0x42

MAX_TRANSFER = 6144  # 16/32-bit transfers: the firmware's buffer (STLINK_DATA_SIZE, MAXIMUM_TRANSFER_SIZE)
WAIT_RETRIES = 5  # WAIT answers before the firmware gives up with SWD_AP_WAIT
WAIT_CLOCKS = 13  # one WAIT round: request, turnaround, acknowledge, turnaround
NRST_PULSE_PS = 1 * PS_PER_MS
VREF_SAMPLE = 1521  # the ADC sample of the 1.2 V reference in OpenOCD's documented example

# V2: SWD clock divisor -> kHz (OpenOCD's and pyOCD's maps); other divisors follow about 3.8 MHz / (d + 1).
V2_SWD_KHZ = {0: 4000, 1: 1800, 2: 1200, 3: 950, 5: 650, 7: 480, 9: 400, 10: 360, 15: 240, 25: 150, 31: 125,
              40: 100, 79: 50, 158: 25, 265: 15, 798: 5}
# V3: the SWD frequencies an STLINK-V3 offers (STM32CubeProgrammer's list), fastest first as OpenOCD expects.
V3_SWD_KHZ = (24000, 8000, 3300, 1000, 200, 50, 5)


@dataclass(frozen=True)
class Personality:
    """One ST-Link model and its firmware version."""
    name: str            # the --link name
    product: str         # the USB product string
    pid: int
    hw: int              # hardware version (2 or 3)
    jtag: int            # firmware J version
    msd: int
    swim: int
    bridge: int
    max_packet: int      # wMaxPacketSize of the bulk endpoints
    max_rw8: int         # largest 8-bit memory transfer
    max_ap: int          # highest AP number the firmware accepts
    default_swd_khz: int

    @property
    def version(self) -> str:
        if self.hw >= 3:
            parts = [f"V{self.hw}", f"J{self.jtag}", f"M{self.msd}"]
            parts += [f"B{self.bridge}"] if self.bridge else []
            parts += [f"S{self.swim}"] if self.swim else []
            return "".join(parts)
        return f"V{self.hw}J{self.jtag}M{self.msd}"

    def version_reply(self) -> bytes:
        """GET_VERSION: a V3 answers v=3, J0, S0 (the rest comes from GET_VERSION_EX)."""
        if self.hw >= 3:
            word = self.hw << 12
        else:
            word = (self.hw << 12) | (self.jtag << 6) | self.msd
        return struct.pack(">H", word) + struct.pack("<HH", ST_VID, self.pid)

    def version_ex_reply(self) -> bytes:
        return bytes([self.hw, self.swim, self.jtag, self.msd, self.bridge, 0, 0, 0]) + struct.pack(
            "<HH", ST_VID, self.pid)

    @property
    def swd_speeds_khz(self) -> Tuple[int, ...]:
        return V3_SWD_KHZ if self.hw >= 3 else tuple(sorted(set(V2_SWD_KHZ.values()), reverse=True))


# An ST-Link/V2-1 as on Nucleo and Discovery boards (full speed) and an STLINK-V3SET (high speed).
PERSONALITIES: Dict[str, Personality] = {
    "stlink-v2": Personality("stlink-v2", "STM32 STLink", 0x374B, 2, 40, 27, 0, 0, 64, 64, 8, 1800),
    "stlink-v3": Personality("stlink-v3", "STLINK-V3", 0x374F, 3, 13, 4, 1, 3, 512, 512, 8, 1000),
}
DEFAULT_PERSONALITY = "stlink-v2"


def v2_divisor_khz(divisor: int) -> int:
    """The SWD clock of a V2 divisor (OpenOCD/pyOCD tables; about 3.8 MHz / (d + 1) in between)."""
    return V2_SWD_KHZ.get(divisor, max(1, round(3800 / (divisor + 1))))


class StLinkFirmware:
    """One virtual ST-Link's firmware state and its USB command handler (module docstring)."""

    def __init__(self, personality: Personality, port: DebugAccess, link: Optional[UsbLink] = None) -> None:
        self.personality = personality
        self.port = port
        self.link = link if link is not None else USB_LINKS[personality.name]
        self.mode = MODE_DFU
        self.swd_khz = personality.default_swd_khz
        self.open_aps: set = set()
        self._rw_status = (OK, 0)
        self._misc_reply = b""
        self._swd = 0
        # counters for tools and the bench
        self.commands = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self._handlers: Dict[int, Callable[[bytes, bytes, int], bytes]] = {
            READMEM_32BIT: self._read_memory, READMEM_8BIT: self._read_memory, READMEM_16BIT: self._read_memory,
            READMEM_32BIT_NO_ADDR_INC: self._read_memory,
            WRITEMEM_32BIT: self._write_memory, WRITEMEM_8BIT: self._write_memory,
            WRITEMEM_16BIT: self._write_memory, WRITEMEM_32BIT_NO_ADDR_INC: self._write_memory,
            EXIT: self._exit, ENTER: self._enter, READ_IDCODES: self._read_idcodes, RESETSYS: self._resetsys,
            READREG: self._read_reg, WRITEREG: self._write_reg, READALLREGS: self._read_all_regs,
            WRITEDEBUGREG: self._write_debug_reg, READDEBUGREG: self._read_debug_reg,
            GETLASTRWSTATUS: self._last_rw_status, GETLASTRWSTATUS2: self._last_rw_status2,
            DRIVE_NRST: self._drive_nrst, START_TRACE_RX: self._ok, STOP_TRACE_RX: self._ok,
            GET_TRACE_NB: self._trace_bytes, SWD_SET_FREQ: self._swd_set_freq, JTAG_SET_FREQ: self._ok,
            READ_DAP_REG: self._read_dap_reg, WRITE_DAP_REG: self._write_dap_reg, INIT_AP: self._init_ap,
            CLOSE_AP_DBG: self._close_ap, RW_MISC_OUT: self._rw_misc_out, RW_MISC_IN: self._rw_misc_in,
            GET_BOARD_IDENTIFIERS: self._board_identifiers, SET_COM_FREQ: self._set_com_freq,
            GET_COM_FREQ: self._get_com_freq, SWITCH_STLINK_FREQ: self._switch_freq,
        }

    # ==========================================================================================================
    # One USB command
    def command(self, cdb: bytes, out_data: bytes = b"", in_length: int = 0) -> bytes:
        """Run one command: the command block `cdb` (up to 16 bytes, zero padded), its OUT data, and
        `in_length` bytes read back. Returns exactly `in_length` bytes."""
        cdb = bytes(cdb[:16]).ljust(16, b"\0")
        self.commands += 1
        self.bytes_out += len(out_data)
        self.bytes_in += in_length
        self._swd = 0
        self.port.pass_time(self.link.latency_ps + self.link.usb_ps(len(out_data) + in_length))
        self.port.wait_limit_ps = WAIT_RETRIES * WAIT_CLOCKS * PS_PER_S // self.swd_hz
        reply = self._dispatch(cdb, bytes(out_data), in_length)
        if self._swd:
            self.port.pass_time(self.link.swd_ps(self._swd, self.swd_hz))
        return reply[:in_length].ljust(in_length, b"\0")

    @property
    def swd_hz(self) -> int:
        return self.swd_khz * 1000

    def _dispatch(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        head = cdb[0]
        if head == GET_VERSION:
            return self.personality.version_reply()
        if head == GET_VERSION_EX and self.personality.hw >= 3:
            return self.personality.version_ex_reply()
        if head == GET_CURRENT_MODE:
            return bytes([self.mode, 0])
        if head == GET_TARGET_VOLTAGE:
            return struct.pack("<II", VREF_SAMPLE, round(self.port.target_voltage * VREF_SAMPLE / 2.4))
        if head == DFU_COMMAND and cdb[1] == DFU_EXIT or head == SWIM_COMMAND and cdb[1] == SWIM_EXIT:
            if self.mode != MODE_DEBUG:
                self.mode = MODE_MASS
            return b""
        if head == DEBUG_COMMAND:
            handler = self._handlers.get(cdb[1])
            if handler is not None:
                if self.mode != MODE_DEBUG and cdb[1] in _NEEDS_DEBUG_MODE:
                    return self._refused(cdb[1], NO_DEVICE_CONNECTED)
                return handler(cdb, out, in_length)
        return bytes([UNKNOWN_CMD, 0])

    def _refused(self, sub: int, status: int) -> bytes:
        if sub in _MEMORY_COMMANDS:
            self._rw_status = (status, 0)
            return b""
        return bytes([status, 0])

    # ==========================================================================================================
    # Modes
    def _enter(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        if cdb[2] == ENTER_JTAG:
            return _status(UNKNOWN_JTAG_CHAIN)
        if cdb[2] != ENTER_SWD:
            return _status(CMD_ERROR)
        port = self.port
        port.attach()
        self._swd += 5  # line reset, DPIDR, ABORT, CTRL/STAT write and read
        port.read_dp(DP_IDR)
        port.write_dp(DP_ABORT, ABORT_STKERRCLR | ABORT_STKCMPCLR | ABORT_WDERRCLR | ABORT_ORUNERRCLR)
        port.write_dp(DP_CTRL_STAT, CSYSPWRUPREQ | CDBGPWRUPREQ)
        self.mode = MODE_DEBUG
        return _status(OK)

    def _exit(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        if self.mode == MODE_DEBUG:
            self.port.detach()
        self.mode = MODE_MASS
        self.open_aps.clear()
        return b""

    def _ok(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        return _status(OK)

    # ==========================================================================================================
    # Clocks
    def _swd_set_freq(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        if self.personality.hw >= 3:
            return _status(UNKNOWN_CMD)
        self.swd_khz = v2_divisor_khz(_u16(cdb, 2))
        return _status(OK)

    def _set_com_freq(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        if self.personality.hw < 3:
            return _status(UNKNOWN_CMD)
        if cdb[2] != 0:
            return _status(CMD_ERROR)  # JTAG is not modelled
        wanted = _u32(cdb, 4)
        speeds = self.personality.swd_speeds_khz
        self.swd_khz = next((khz for khz in speeds if khz <= wanted), speeds[-1])
        return _status(OK) + b"\0\0" + struct.pack("<I", self.swd_khz)

    def _get_com_freq(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        if self.personality.hw < 3:
            return _status(UNKNOWN_CMD)
        speeds = self.personality.swd_speeds_khz
        return (_status(OK) + b"\0\0" + struct.pack("<II", self.swd_khz, len(speeds))
                + b"".join(struct.pack("<I", khz) for khz in speeds))

    def _switch_freq(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        if self.personality.hw < 3:
            return _status(UNKNOWN_CMD)
        if cdb[2] not in (1, 2, 4):
            return _status(CMD_ERROR)
        return _status(CONF_CHANGED) + bytes(6)

    def _board_identifiers(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        return _status(OK) + bytes(126)

    def _trace_bytes(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        return b"\0\0"  # no SWO trace is produced

    # ==========================================================================================================
    # The DP and APs
    def _read_idcodes(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        self._swd += 1
        return _status(OK) + b"\0\0" + struct.pack("<I", self.port.read_dp(DP_IDR))

    def _read_dap_reg(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        port_number, address = _u16(cdb, 2), _u16(cdb, 4)
        if port_number == DP_PORT:
            self._swd += 1
            return _status(OK) + b"\0\0" + struct.pack("<I", self.port.read_dp(address))
        if port_number > self.personality.max_ap:
            return _status(BAD_AP)
        self._swd += 3  # SELECT, the AP read, RDBUFF
        status, value = self._dap_access(lambda: self.port.ap_read(port_number, address))
        return _status(status) + b"\0\0" + struct.pack("<I", value or 0)

    def _write_dap_reg(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        port_number, address, value = _u16(cdb, 2), _u16(cdb, 4), _u32(cdb, 6)
        if port_number == DP_PORT:
            self._swd += 1
            self.port.write_dp(address, value)
            return _status(OK)
        if port_number > self.personality.max_ap:
            return _status(BAD_AP)
        self._swd += 2
        status, _ = self._dap_access(lambda: self.port.ap_write(port_number, address, value))
        return _status(status)

    @staticmethod
    def _dap_access(access: Callable[[], Optional[int]]) -> Tuple[int, Optional[int]]:
        try:
            return OK, access()
        except BusWait:
            return SWD_AP_WAIT, None
        except BusFault:
            return SWD_AP_FAULT, None

    def _init_ap(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        if cdb[2] > self.personality.max_ap:
            return _status(BAD_AP)
        self.open_aps.add(cdb[2])
        self._swd += 2  # SELECT, IDR
        return _status(OK)

    def _close_ap(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        if cdb[2] > self.personality.max_ap:
            return _status(BAD_AP)
        self.open_aps.discard(cdb[2])
        return _status(OK)

    # ==========================================================================================================
    # Memory through the AHB-AP
    def _check_memory(self, cdb: bytes, out_length: Optional[int]) -> Tuple[int, int, int, int]:
        """(status, address, length, transfer size) of a memory command; status OK when it may run."""
        sub = cdb[1]
        address, length, apsel = _u32(cdb, 2), _u16(cdb, 6), cdb[8]
        size = _TRANSFER_SIZE[sub]
        limit = self.personality.max_rw8 if size == 1 else MAX_TRANSFER
        if apsel > self.personality.max_ap:
            return BAD_AP, address, length, size
        if length > limit or (out_length is not None and out_length != length):
            return CMD_ERROR, address, length, size
        if address % size or length % size:
            return ALIGNMENT_ERROR, address, length, size
        if apsel != 0:
            return SWD_AP_FAULT, address, length, size  # APs 1-3 are absent on the STM32F4
        return OK, address, length, size

    def _read_memory(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        status, address, length, size = self._check_memory(cdb, None)
        data = b""
        if status == OK and length:
            self._clear_sticky()
            self._swd += _transfers(address, length, size, read=True)
            status, fault, data = self._memory_access(
                address, lambda: self.port.read_memory(address, length, size, cdb[1] != READMEM_32BIT_NO_ADDR_INC))
            self._rw_status = (status, fault)
        else:
            self._rw_status = (status, address if status != OK else 0)
        return data.ljust(length, b"\0")

    def _write_memory(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        status, address, length, size = self._check_memory(cdb, len(out))
        if status == OK and length:
            self._clear_sticky()
            self._swd += _transfers(address, length, size, read=False)
            status, fault, _ = self._memory_access(
                address, partial(self.port.write_memory, address, out, size, cdb[1] != WRITEMEM_32BIT_NO_ADDR_INC))
            self._rw_status = (status, fault)
        else:
            self._rw_status = (status, address if status != OK else 0)
        return b""

    @staticmethod
    def _memory_access(address: int, access: Callable[[], Optional[bytes]]) -> Tuple[int, int, bytes]:
        """(status, fault address, data read) of one memory transfer."""
        try:
            return OK, 0, access() or b""
        except BusWait as wait:
            return SWD_AP_WAIT, wait.address if wait.address is not None else address, b""
        except BusFault as fault:
            return SWD_AP_FAULT, fault.address if fault.address is not None else address, b""

    def _clear_sticky(self) -> None:
        """A STICKYERR left by an earlier fault would fail every AP access: the firmware clears it first."""
        self._swd += 1
        if self.port.read_dp(DP_CTRL_STAT) & STICKYERR:
            self._swd += 1
            self.port.write_dp(DP_ABORT, ABORT_STKERRCLR)

    def _last_rw_status(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        return _status(self._rw_status[0])

    def _last_rw_status2(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        status, fault = self._rw_status
        return _status(status) + b"\0\0" + struct.pack("<I", fault) + bytes(4)

    # ==========================================================================================================
    # Debug registers, core registers, resets (32-bit accesses through the AHB-AP)
    def _word_read(self, address: int) -> Tuple[int, int]:
        self._swd += _transfers(address, 4, 4, read=True)
        status, _fault, data = self._memory_access(address, lambda: self.port.read_memory(address, 4))
        return status, int.from_bytes(data, "little") if data else 0

    def _word_write(self, address: int, value: int) -> int:
        self._swd += _transfers(address, 4, 4, read=False)
        status, _fault, _ = self._memory_access(
            address, partial(self.port.write_memory, address, struct.pack("<I", value & 0xFFFF_FFFF)))
        return status

    def _read_debug_reg(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        self._clear_sticky()
        status, value = self._word_read(_u32(cdb, 2))
        return _status(status) + b"\0\0" + struct.pack("<I", value)

    def _write_debug_reg(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        self._clear_sticky()
        return _status(self._word_write(_u32(cdb, 2), _u32(cdb, 6)))

    def _core_register(self, regsel: int) -> Tuple[int, int]:
        """DCRSR <- REGSEL, wait for DHCSR.S_REGRDY, read DCRDR (ARMv7-M C1.6.3)."""
        status = self._word_write(DCRSR, regsel & 0x7F)
        if status != OK:
            return status, 0
        status, _dhcsr = self._word_read(DHCSR)
        if status != OK:
            return status, 0
        return self._word_read(DCRDR)

    def _read_reg(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        self._clear_sticky()
        status, value = self._core_register(cdb[2])
        return _status(status) + b"\0\0" + struct.pack("<I", value)

    def _write_reg(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        self._clear_sticky()
        status = self._word_write(DCRDR, _u32(cdb, 3))
        if status == OK:
            status = self._word_write(DCRSR, (1 << 16) | (cdb[2] & 0x7F))
        if status == OK:
            status, _dhcsr = self._word_read(DHCSR)
        return _status(status)

    def _read_all_regs(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        """R0-R15, xPSR, MSP, PSP, CONTROL/FAULTMASK/BASEPRI/PRIMASK, FPSCR."""
        self._clear_sticky()
        values: List[int] = []
        for regsel in list(range(19)) + [20, 33]:
            status, value = self._core_register(regsel)
            if status != OK:
                return _status(status)
            values.append(value)
        return _status(OK) + b"\0\0" + struct.pack(f"<{len(values)}I", *values)

    def _resetsys(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        self._clear_sticky()
        return _status(self._word_write(SCS_AIRCR, 0x05FA_0004))  # VECTKEY | SYSRESETREQ

    def _drive_nrst(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        if cdb[2] == NRST_LOW:
            self.port.nrst = True
        elif cdb[2] == NRST_HIGH:
            self.port.nrst = False
        elif cdb[2] == NRST_PULSE:
            self.port.nrst = True
            self.port.pass_time(NRST_PULSE_PS)
            self.port.nrst = False
        else:
            return _status(CMD_ERROR)
        return _status(OK)

    # ==========================================================================================================
    # RW_MISC: a batch of 32-bit AP accesses (OpenOCD stlink-dap, TCP server API >= 3)
    def _rw_misc_out(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        items = _u32(cdb, 2)
        limit = 64 if self.personality.hw < 3 else 1227
        opcodes_length = (items + 3) & ~3
        if items > limit or len(out) != opcodes_length + 4 * items:
            self._misc_reply = b""
            return b""
        self._clear_sticky()
        values = struct.unpack_from(f"<{items}I", out, opcodes_length)
        data, statuses = [0] * items, [OK] * items
        apsel, address = 0, 0
        for index, (opcode, value) in enumerate(zip(out[:items], values)):
            if opcode == RW_MISC_APNUM:
                apsel = value
                self._swd += 1
                statuses[index] = OK if apsel <= self.personality.max_ap else BAD_AP
            elif opcode == RW_MISC_ADDRESS:
                address = value
                self._swd += 1
            elif opcode == RW_MISC_WRITE:
                statuses[index] = SWD_AP_FAULT if apsel else self._word_write(address, value)
            elif opcode == RW_MISC_READ:
                status, word = (SWD_AP_FAULT, 0) if apsel else self._word_read(value)
                statuses[index], data[index] = status, word
            else:
                statuses[index] = CMD_ERROR
        self._misc_reply = struct.pack(f"<{2 * items}I", *data, *statuses)
        return b""

    def _rw_misc_in(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        reply, self._misc_reply = self._misc_reply, b""
        return reply


def _status(code: int) -> bytes:
    return bytes([code, 0])


def _u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])


def _transfers(address: int, length: int, size: int, read: bool) -> int:
    """SWD transfers of one memory command: CSW and TAR, the data, RDBUFF after reads, a TAR reload at every
    1 KB boundary (ADIv5 guarantees auto-increment only within 1 KB)."""
    data = length // size
    reloads = (address + length - 1) // 1024 - address // 1024
    return 2 + data + (1 if read else 0) + reloads


_TRANSFER_SIZE = {READMEM_32BIT: 4, WRITEMEM_32BIT: 4, READMEM_32BIT_NO_ADDR_INC: 4, WRITEMEM_32BIT_NO_ADDR_INC: 4,
                  READMEM_16BIT: 2, WRITEMEM_16BIT: 2, READMEM_8BIT: 1, WRITEMEM_8BIT: 1}
_MEMORY_COMMANDS = frozenset(_TRANSFER_SIZE)
# Commands that act on the target: only in debug mode.
_NEEDS_DEBUG_MODE = _MEMORY_COMMANDS | {READ_IDCODES, RESETSYS, READREG, WRITEREG, READALLREGS, WRITEDEBUGREG,
                                        READDEBUGREG, READ_DAP_REG, WRITE_DAP_REG, INIT_AP, CLOSE_AP_DBG,
                                        RW_MISC_OUT}
