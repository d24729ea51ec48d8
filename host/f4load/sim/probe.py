"""pyocd probe plugin for the virtual STM32F407: unmodified pyocd drives the simulator with `--uid f4sim`.

`SimProbe` behaves like pyocd's ST-Link probe (`pyocd/probe/stlink_probe.py`): the probe firmware selects the
AP and the DP bank itself (capabilities MANAGED_AP_SELECTION and MANAGED_DPBANKSEL, so pyocd hands AP
registers as `(APSEL << 24) | register`), and memory goes through an accelerated memory interface whose block
transfers are single probe commands of up to `link.max_payload` bytes.

The probe reaches the chip only through its debug port (`debug.DebugAccess`, a `DebugPort`): DP/AP registers,
memory through the AHB-AP, the NRST pin, the supply it measures, time passing - as the ST-Link firmware
(stlink.py) does. The board around it (`_OpenChip`) builds, powers, saves and records the chip. Before
a memory access it does what the probe's own memory engine does for pyocd: it brings the debug domain back up
if a power-on or brown-out reset took it down, and clears a STICKYERR an earlier fault left.

Link accounting: every probe command costs `link.cost_ps(words)` of virtual time, charged through
`DebugPort.pass_time` *before* the access happens (the request has to reach the target first; while it travels
the core keeps running). Counters `commands`, `bytes_read` and `bytes_written` are public. The link model comes
from the session option `f4sim.link`, else the `F4LOAD_SIM_LINK` environment variable, else `stlink-v2`.

The ideal link charges nothing, so a host polling a running core would never see time pass. An ideal host
learns of a halt the moment it happens, so on that link a read of DHCSR that would find the core running
first lets the target run until it halts, at most `IDEAL_WAIT_LIMIT_PS` (see `_ideal_host_wait`).

Several virtual boards: `-u f4sim:NAME` is the board NAME, with its own state directory (`boards/NAME` inside
`F4LOAD_SIM_STATE`) and unique ID (state.board_dir); plain `f4sim` is the default board.

The chip lives in the state directory (`F4LOAD_SIM_STATE`): `open()` loads it and powers it on, `close()`
saves it, so one pyocd process can program the virtual flash and the next one reads it back. While it is
open the directory is locked: a second process gets a one-line "in use by pid N" error.

Code in the same process reaches the live objects through the session: `session.probe` is the SimProbe (in
`pyocd commander` a proxy that forwards attributes), `session.probe.chip` the Chip, `session.probe.clock`
its virtual clock. Bad input (unknown fault, corrupt state file, unknown link model) is raised from `open()`
as pyocd's ProbeError, which pyocd prints as one line.

This module is imported by pyocd at start-up for *every* pyocd command (entry point `pyocd.probe`), so its
import must stay light and must not fail: the chip model is imported only when the probe is opened.
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from pyocd.board.board import Board
from pyocd.board.board_ids import BoardInfo
from pyocd.core import exceptions
from pyocd.core.memory_interface import MemoryInterface
from pyocd.core.options import OptionInfo
from pyocd.core.plugin import Plugin
from pyocd.probe.debug_probe import DebugProbe

from f4load.registers import DHCSR
from f4load.sim.clock import DEFAULT_LINK_MODEL, LINK_MODELS, PS_PER_MS, PS_PER_S, LinkModel

if TYPE_CHECKING:
    from f4load.sim.chip import Chip
    from f4load.sim.debug_port import DebugAccess

LOG = logging.getLogger(__name__)

PROBE_ID = "f4sim"
LINK_ENV = "F4LOAD_SIM_LINK"
LINK_OPTION = "f4sim.link"
# Path of a .FLM flash algorithm the board's target uses instead of f4load's stub (target.py).
FLM_OPTION = "f4sim.flm"

APSEL_SHIFT = 24
APSEL_MASK = 0xFF << APSEL_SHIFT
AP_REGISTER_MASK = 0xFFFF
AHB_AP = 0  # the only MEM-AP of the STM32F4 (RM0090 38.4); AP1-3 read IDR 0

# An ST-Link moves 8-bit transfers only one USB packet at a time (pyocd stlink.py: read_mem8 uses
# max_packet_size, 64 bytes on a full-speed V2).
BYTE_TRANSFER_MAX = 64

# On the ideal link, how long a DHCSR poll may wait for the core to halt (the clock stops at the halt).
IDEAL_WAIT_LIMIT_PS = 1 * PS_PER_MS


def link_model_named(name: str) -> LinkModel:
    """The link model called `name`; a one-line ProbeError naming the choices otherwise."""
    try:
        return LINK_MODELS[name]
    except KeyError:
        raise exceptions.ProbeError(
            f"unknown f4sim link model {name!r} (choose one of {', '.join(sorted(LINK_MODELS))})") from None


class SimProbe(DebugProbe):
    """A debug probe wired to the virtual STM32F407 in the state directory."""

    @classmethod
    def get_all_connected_probes(cls, unique_id: Optional[str] = None,
                                 is_explicit: bool = False) -> List[SimProbe]:
        # Not a USB device: it is listed only when asked for by type ("f4sim:"), never in a plain `pyocd list`,
        # so that a real probe stays the default choice.
        return [cls()] if is_explicit else []

    @classmethod
    def get_probe_with_id(cls, unique_id: str, is_explicit: bool = False) -> Optional[SimProbe]:
        """`f4sim` (or `f4sim:`) is the default virtual board; `f4sim:NAME` the named board NAME (its own
        state directory and unique ID: state.board_dir)."""
        if unique_id.lower() == PROBE_ID or (is_explicit and unique_id == ""):
            return cls()
        if is_explicit:
            return cls(board=unique_id)
        return None

    def __init__(self, board: Optional[str] = None) -> None:
        super().__init__()
        self.board = board
        self._open_chip: Optional[_OpenChip] = None
        self._chip: Optional[Chip] = None
        self._dp: Optional[DebugAccess] = None
        self._link: Optional[LinkModel] = None
        self._is_open = False
        self._is_connected = False
        self._memory_interface: Optional[SimMemoryInterface] = None
        self._swd_hz: Optional[float] = None
        self._disconnect_after: Optional[int] = None
        self.commands = 0
        self.bytes_read = 0
        self.bytes_written = 0

    # --- identity -------------------------------------------------------------------------------------
    @property
    def vendor_name(self) -> str:
        return "f4load"

    @property
    def product_name(self) -> str:
        return "virtual ST-Link (simulated STM32F407)"

    @property
    def unique_id(self) -> str:
        return PROBE_ID if self.board is None else f"{PROBE_ID}:{self.board}"

    @property
    def supported_wire_protocols(self) -> List[DebugProbe.Protocol]:
        return [DebugProbe.Protocol.DEFAULT, DebugProbe.Protocol.SWD]

    @property
    def wire_protocol(self) -> Optional[DebugProbe.Protocol]:
        return DebugProbe.Protocol.SWD if self._is_connected else None

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def capabilities(self) -> Set[DebugProbe.Capability]:
        # What pyocd's ST-Link probe advertises, less SWO (no trace model) and banked DP registers (our DP
        # is DPv1, IDR 0x2BA01477, which has none).
        return {DebugProbe.Capability.MANAGED_AP_SELECTION, DebugProbe.Capability.MANAGED_DPBANKSEL}

    # --- the simulated board --------------------------------------------------------------------------
    @property
    def chip(self) -> Chip:
        """The live virtual chip (only while the probe is open)."""
        if self._chip is None:
            raise exceptions.ProbeError("the f4sim probe is not open")
        return self._chip

    @property
    def link(self) -> LinkModel:
        """The link model charging this probe's commands (chosen when the probe opens)."""
        return self._link if self._link is not None else self._choose_link()

    @property
    def clock(self) -> Any:
        """The chip's virtual clock (`now_ps`, `seconds`)."""
        return self.chip.clock

    @property
    def target_voltage(self) -> Optional[float]:
        """What the probe measures on the target's VDD, like an ST-Link's TVCC reading."""
        return self._dp.target_voltage if self._dp is not None else None

    @property
    def associated_board_info(self) -> Optional[BoardInfo]:
        """The board: f4load's own pyocd target type for an STM32F407 of the state's flash size
        (`f4load_stm32f407xe` / `f4load_stm32f407xg`, f4load.pyocd_targets), so `pyocd flash -u f4sim` uses
        f4load's stub as its flash algorithm."""
        from f4load import pyocd_targets

        flash_kb = _peek_flash_kb(self.board)
        return BoardInfo(name=f"f4load virtual STM32F407 ({flash_kb} KB flash)",
                         target=pyocd_targets.target_name("STM32F407", flash_kb * 1024), vendor="f4load")

    def create_associated_board(self) -> Optional[Board]:
        from f4load import pyocd_targets
        from f4load.sim.target import apply_flm_option

        assert self.session is not None
        pyocd_targets.register_targets()
        board = Board(self.session, board_info=self.associated_board_info)
        apply_flm_option(board.target, self.session.options.get(FLM_OPTION))
        return board

    # --- open/close: the state directory --------------------------------------------------------------
    def open(self) -> None:
        self._link = self._choose_link()
        self._open_chip = _OpenChip(self.board)
        self._chip, self._dp = self._open_chip.chip, self._open_chip.dp
        self._disconnect_after = self._open_chip.disconnect_after
        self.commands = self.bytes_read = self.bytes_written = 0
        self._is_open = True
        LOG.debug("f4sim: opened, link %s, virtual time %.6f s", self._link.name, self._dp.now_ps / PS_PER_S)

    def close(self) -> None:
        """Save the chip to its state directory and release it.

        A failed save is the session's failure (state.SimSaveError, one line naming the file): the flash the
        session wrote is lost. It is raised - not as a pyocd error, which pyocd's Session.close would log and
        swallow - so `pyocd` exits 1 and `f4load` with the probe class' status. When close runs because
        another error is already on its way out (a failed flash, an interrupt), that error stays the one
        reported and the failed save is logged beside it.
        """
        if self._open_chip is None:
            return
        another_error = sys.exc_info()[1] is not None
        open_chip, self._open_chip = self._open_chip, None
        self._chip = None
        self._is_open = self._is_connected = False
        self._memory_interface = None
        open_chip.record_last_session()
        try:
            open_chip.save_and_release()
        except Exception as error:
            if not another_error:
                raise
            LOG.error("%s", error)
            return
        LOG.debug("f4sim: closed after %d commands, virtual time %.6f s", self.commands,
                  open_chip.dp.now_ps / PS_PER_S)

    def _choose_link(self) -> LinkModel:
        name = None
        if self.session is not None:
            name = self.session.options.get(LINK_OPTION)
        if not name:
            name = os.environ.get(LINK_ENV) or DEFAULT_LINK_MODEL
        return link_model_named(name)

    # --- link accounting ------------------------------------------------------------------------------
    def _command(self, words: int) -> DebugAccess:
        """Account one probe command moving `words` SWD data words and return the debug port to act on."""
        if self._dp is None:
            raise exceptions.ProbeError("the f4sim probe is not open")
        if self._disconnect_after is not None and self.commands >= self._disconnect_after:
            raise exceptions.ProbeDisconnected(
                f"f4sim: link lost after {self._disconnect_after} probe commands (injected fault)")
        self.commands += 1
        self._dp.pass_time(self.link.cost_ps(words))
        return self._dp

    def _memory_command(self, words: int) -> DebugAccess:
        """A memory command: accounted, then the debug domain ready for the AHB-AP (module docstring)."""
        from f4load.sim.debug_port import (
            ABORT_STKERRCLR,
            CDBGPWRUPREQ,
            CSYSPWRUPREQ,
            DP_ABORT,
            DP_CTRL_STAT,
            STICKYERR,
        )

        dp = self._command(words)
        ctrl_stat = dp.read_dp(DP_CTRL_STAT)
        if ctrl_stat & STICKYERR:
            dp.write_dp(DP_ABORT, ABORT_STKERRCLR)
        if not dp.powered:
            dp.write_dp(DP_CTRL_STAT, ctrl_stat | CSYSPWRUPREQ | CDBGPWRUPREQ)
        return dp

    def _ideal_host_wait(self) -> None:
        """On a zero-overhead link, let a running core run until it halts (bounded) before DHCSR is read."""
        if self.link.command_overhead_ps or self._dp is None:
            return
        self._dp.run_until_halted(IDEAL_WAIT_LIMIT_PS)

    # --- target control -------------------------------------------------------------------------------
    def connect(self, protocol: Optional[DebugProbe.Protocol] = None) -> None:
        if protocol not in (None, DebugProbe.Protocol.DEFAULT, DebugProbe.Protocol.SWD):
            raise exceptions.ProbeError(f"f4sim speaks SWD only, not {protocol.name}")
        self._command(0).attach()
        self._is_connected = True

    def disconnect(self) -> None:
        self._memory_interface = None
        self._is_connected = False
        if self._dp is not None:
            self._dp.detach()
        self._command(0)

    def set_clock(self, frequency: float) -> None:
        # As an ST-Link: the SWD clock becomes the fastest step of the link model not above the request, and
        # the data phase of every later command is charged at that clock.
        self._swd_hz = frequency
        self._link = self.link.at_swd_clock(frequency)

    def assert_reset(self, asserted: bool) -> None:
        # NRST low is a pin reset and holds the chip in reset until released (chip.py).
        self._command(0).nrst = asserted

    def is_reset_asserted(self) -> bool:
        return self._dp is not None and self._dp.nrst

    def reset(self) -> None:
        """Pulse NRST for `reset.hold_time`, then wait `reset.post_delay`, both in virtual time."""
        hold_s = post_s = 0.1
        if self.session is not None:
            hold_s = float(self.session.options.get("reset.hold_time"))
            post_s = float(self.session.options.get("reset.post_delay"))
        self.assert_reset(True)
        self._command(0).pass_time(int(hold_s * PS_PER_S))
        self.assert_reset(False)
        self._command(0).pass_time(int(post_s * PS_PER_S))

    # --- DAP register access --------------------------------------------------------------------------
    def read_dp(self, addr: int, now: bool = True) -> Union[int, Callable[[], int]]:
        dp = self._command(1)
        result = self._dap_access(lambda: dp.read_dp(addr))
        return result if now else (lambda: result)

    def write_dp(self, addr: int, data: int) -> None:
        dp = self._command(1)
        self._dap_access(lambda: dp.write_dp(addr, data))

    def read_ap(self, addr: int, now: bool = True) -> Union[int, Callable[[], int]]:
        result = self._read_ap_now(addr)
        return result if now else (lambda: result)

    def _read_ap_now(self, addr: int) -> int:
        dp = self._command(1)
        return int(self._dap_access(lambda: dp.read_ap(addr)))

    def write_ap(self, addr: int, data: int) -> None:
        dp = self._command(1)
        self._dap_access(lambda: dp.write_ap(addr, data))

    def read_ap_multiple(self, addr: int, count: int = 1,
                         now: bool = True) -> Union[Sequence[int], Callable[[], Sequence[int]]]:
        results = [self._read_ap_now(addr) for _ in range(count)]
        return results if now else (lambda: results)

    def write_ap_multiple(self, addr: int, values: Sequence[int]) -> None:
        for value in values:
            self.write_ap(addr, value)

    def _dap_access(self, access: Callable[[], Any]) -> Any:
        from f4load.sim.flash import BusFault

        try:
            return access()
        except BusFault as fault:
            raise exceptions.TransferFaultError(str(fault)) from None

    def get_memory_interface_for_ap(self, ap_address: Any) -> Optional[MemoryInterface]:
        assert self._is_connected
        if getattr(ap_address, "apsel", None) != AHB_AP:
            return None
        if self._memory_interface is None:
            self._memory_interface = SimMemoryInterface(self)
        return self._memory_interface


class SimMemoryInterface(MemoryInterface):
    """The AHB-AP as an ST-Link presents it: whole transfers per command instead of TAR/DRW accesses."""

    def __init__(self, probe: SimProbe) -> None:
        self._probe = probe

    # --- single transfers -----------------------------------------------------------------------------
    def write_memory(self, addr: int, data: int, transfer_size: int = 32, **attrs: Any) -> None:
        assert transfer_size in (8, 16, 32)
        addr &= 0xFFFF_FFFF
        size = transfer_size // 8
        dp = self._probe._memory_command(1)
        self._probe.bytes_written += size
        with _faults_as_transfer_errors("write", addr, size):
            dp.write_memory(addr, (data & ((1 << transfer_size) - 1)).to_bytes(size, "little"), size)

    def read_memory(self, addr: int, transfer_size: int = 32, now: bool = True,
                    **attrs: Any) -> Union[int, Callable[[], int]]:
        assert transfer_size in (8, 16, 32)
        addr &= 0xFFFF_FFFF
        size = transfer_size // 8
        if addr == DHCSR:
            self._probe._ideal_host_wait()
        dp = self._probe._memory_command(1)
        self._probe.bytes_read += size
        with _faults_as_transfer_errors("read", addr, size):
            result = int.from_bytes(dp.read_memory(addr, size, size), "little")
        return result if now else (lambda: result)

    # --- block transfers ------------------------------------------------------------------------------
    def read_memory_block32(self, addr: int, size: int, **attrs: Any) -> Sequence[int]:
        addr &= 0xFFFF_FFFF
        data = self._read_words(addr, size * 4)
        return [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]

    def write_memory_block32(self, addr: int, data: Sequence[int], **attrs: Any) -> None:
        addr &= 0xFFFF_FFFF
        self._write_words(addr, b"".join((value & 0xFFFF_FFFF).to_bytes(4, "little") for value in data))

    def read_memory_block8(self, addr: int, size: int, **attrs: Any) -> Sequence[int]:
        addr &= 0xFFFF_FFFF
        head, body, tail = _split_unaligned(addr, size)
        out = bytearray(self._read_bytes(addr, head))
        out += self._read_words(addr + head, body)
        out += self._read_bytes(addr + head + body, tail)
        return list(out)

    def write_memory_block8(self, addr: int, data: Sequence[int], **attrs: Any) -> None:
        addr &= 0xFFFF_FFFF
        raw = bytes(data)
        head, body, _tail = _split_unaligned(addr, len(raw))
        self._write_bytes(addr, raw[:head])
        self._write_words(addr + head, raw[head:head + body])
        self._write_bytes(addr + head + body, raw[head + body:])

    # --- commands: 32-bit blocks up to max_payload, 8-bit blocks up to one USB packet --------------------
    def _read_words(self, addr: int, length: int) -> bytes:
        out = bytearray()
        for start, count in _chunks(addr, length, self._probe.link.max_payload):
            dp = self._probe._memory_command(count // 4)
            self._probe.bytes_read += count
            with _faults_as_transfer_errors("read", start, count):
                out += dp.read_memory(start, count, 4)
        return bytes(out)

    def _write_words(self, addr: int, data: bytes) -> None:
        for start, count in _chunks(addr, len(data), self._probe.link.max_payload):
            dp = self._probe._memory_command(count // 4)
            self._probe.bytes_written += count
            with _faults_as_transfer_errors("write", start, count):
                dp.write_memory(start, data[start - addr:start - addr + count], 4)

    def _read_bytes(self, addr: int, length: int) -> bytes:
        out = bytearray()
        for start, count in _chunks(addr, length, BYTE_TRANSFER_MAX):
            dp = self._probe._memory_command(count)  # one SWD transfer per byte
            self._probe.bytes_read += count
            with _faults_as_transfer_errors("read", start, count):
                out += dp.read_memory(start, count, 1)
        return bytes(out)

    def _write_bytes(self, addr: int, data: bytes) -> None:
        for start, count in _chunks(addr, len(data), BYTE_TRANSFER_MAX):
            dp = self._probe._memory_command(count)
            self._probe.bytes_written += count
            with _faults_as_transfer_errors("write", start, count):
                dp.write_memory(start, data[start - addr:start - addr + count], 1)


def _split_unaligned(addr: int, size: int) -> Tuple[int, int, int]:
    """(leading bytes, aligned word bytes, trailing bytes) of a byte transfer, as pyocd's ST-Link splits it."""
    head = (4 - addr) & 3
    if head >= size:
        return 0, 0, size
    body = (size - head) & ~3
    return head, body, size - head - body


def _chunks(addr: int, length: int, max_payload: int) -> List[Tuple[int, int]]:
    return [(addr + offset, min(max_payload, length - offset)) for offset in range(0, length, max_payload)]


@contextmanager
def _faults_as_transfer_errors(direction: str, addr: int, length: int) -> Iterator[None]:
    """Turn the chip's BusFault into pyocd's TransferFaultError, carrying the faulting address."""
    from f4load.sim.flash import BusFault

    try:
        yield
    except BusFault as fault:
        address = getattr(fault, "address", None)
        if address is None:
            address = addr
        raise exceptions.TransferFaultError(f"{direction}: {fault}", fault_address=address,
                                            length=addr + length - address) from None


# --- the board: the state directory (state.py), the chip (chip.py) and its debug port (debug.py) ------------
class _OpenChip:
    """The board of one open probe: the state directory held locked, the chip built from it and powered, its
    DebugPort (all the probe itself uses), the link fault, and the chip saved and recorded at close."""

    def __init__(self, board: Optional[str]) -> None:
        from f4load.sim import state as sim_state

        try:
            self.directory = sim_state.board_dir(board)
            # One process per chip, as one probe per board: a second pyocd gets "in use by pid N".
            self._lock = sim_state.lock_state(self.directory)
            try:
                chip_state = sim_state.load_state(self.directory)
            except BaseException:
                self._lock.release()
                raise
        except sim_state.SimStateError as error:
            raise exceptions.ProbeError(f"f4sim: {error}") from None
        from f4load.sim.chip import Chip
        from f4load.sim.debug_port import DebugPort

        self.chip = Chip(chip_state.faults, chip_state)
        self.chip.power_on()
        self.dp = DebugPort(self.chip)
        self.disconnect_after = chip_state.faults.disconnect_after_commands  # the link is lost then (a fault)

    def save_and_release(self) -> None:
        from f4load.sim import state as sim_state

        try:
            sim_state.save_state(self.chip.to_state(), self.directory)
        except sim_state.SimStateError as error:
            raise sim_state.SimSaveError(f"f4sim: {error}: the virtual chip was not saved, this session's changes "
                                         f"to its flash and option bytes are lost") from None
        finally:
            self._lock.release()

    def record_last_session(self) -> None:
        """Record how this session leaves the chip (state.save_last_session): core state, FLASH_CR, FLASH_SR. A
        record that cannot be written is logged, not raised: the flash image saved next is what matters."""
        from f4load.registers import FLASH_BASE, FLASH_CR, FLASH_CR_LOCK, FLASH_SR
        from f4load.sim import state as sim_state

        chip = self.chip
        core = ("in reset" if chip.nrst_asserted else "locked up" if chip.lockup else "halted" if chip.halted
                else "sleeping" if chip.sleeping else "running")
        cr = chip.flash.read_register(FLASH_CR - FLASH_BASE)
        record = {"pid": os.getpid(), "virtual_s": chip.clock.seconds, "core": core, "flash_cr": cr,
                  "flash_cr_locked": bool(cr & FLASH_CR_LOCK),
                  "flash_sr": chip.flash.read_register(FLASH_SR - FLASH_BASE)}
        try:
            sim_state.save_last_session(record, self.directory)
        except sim_state.SimStateError as error:
            LOG.warning("f4sim: %s", error)


def _peek_flash_kb(board: Optional[str]) -> int:
    """The flash size of the part in the board's state directory, read before the probe opens (pyocd picks
    the target type when the session is created). A bad state directory is reported by `open()`, not here."""
    from f4load.sim import state as sim_state
    from f4load.sim.faults import Faults

    try:
        return sim_state.environment_faults(sim_state.read_stored_faults(sim_state.board_dir(board))).flash_kb
    except Exception:  # noqa: BLE001 - open() raises the one-line error for the same cause
        return Faults().flash_kb


class SimProbePlugin(Plugin):
    """pyocd plugin entry point (`pyocd.probe`: f4sim)."""

    def load(self) -> type:
        # f4load's target types (f4load.pyocd_targets), for the board and for `-t f4load_stm32f407xg` with
        # any probe. pyocd loads every plugin for every command: a failure here must not break pyocd.
        try:
            from f4load import pyocd_targets

            pyocd_targets.register_targets()
        except Exception as error:  # noqa: BLE001 - see above; create_associated_board raises it again
            LOG.warning("f4sim: could not register f4load's target types: %s", error)
        return SimProbe

    @property
    def name(self) -> str:
        return PROBE_ID

    @property
    def description(self) -> str:
        return "f4load virtual STM32F407 (simulated ST-Link)"

    @property
    def options(self) -> List[OptionInfo]:
        return [OptionInfo(LINK_OPTION, str, None,
                           f"Link model of the f4sim probe: {', '.join(sorted(LINK_MODELS))}. "
                           f"Default: ${LINK_ENV} or {DEFAULT_LINK_MODEL}."),
                OptionInfo(FLM_OPTION, str, None,
                           "Path of a CMSIS .FLM flash algorithm for the virtual STM32F407 (default: f4load's "
                           "stub, through the f4load_stm32f407x* target types).")]

