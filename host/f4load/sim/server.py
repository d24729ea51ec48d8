"""`f4load-sim serve`: virtual boards in their own process, each an ST-Link in front of a virtual STM32F407,
reached over the ST-Link TCP server protocol (the "shared mode" framing of ST's stlink-server, which OpenOCD
0.11+ speaks with `st-link backend tcp PORT` / `hla_stlink_backend tcp PORT`, and f4load's pyocd plugin
`stlink-tcp`, f4load/stlink_tcp.py).

One request, one reply, in lock-step; integers little-endian (../shared/reference/stlink.md section 1); the
USB command's direction is 0 for data out, 1 for data in, 3 for SWO data:

| request | bytes | reply |
|---|---|---|
| 00 REFRESH_DEVICE_LIST | 2 | u32 status |
| 01 GET_NB_DEV | 1 | u32 number of ST-Links (no status) |
| 02 GET_DEV_INFO | 8: [1] index, [4..7] info size (41) | status, device id, serial (32 B), VID, PID, in-use byte |
| 03 OPEN_DEV | 8: [4..7] device id | status, connect id |
| 04 CLOSE_DEV | 8: [4..7] connect id | status |
| 05 SEND_USB_CMD | 32 + N: [4..7] connect id, [8..23] command block, [24] direction, [28..31] N | status (+ N in) |
| 06 GET_SERVER_VERSION | 4 | u32 API version, major, minor, build (no status) |
| 80 F4LOAD_BOARD_CLOCK | 8: [4..7] device id | status, u64 virtual time (ps), u64 USB commands so far |

Status 1 is OK; 0x1002 BAD_PARAMETER (unknown device or connect id, bad size), 0x1003 OPEN_ERR (the ST-Link
is open by another client), 0x1053 CMD_NOT_AVAILABLE (unknown command). A reply always has the length its
request implies, with zeros where there is no data. A request whose length cannot be known (an unknown command
byte, a data phase beyond 10,208 bytes, an unknown direction) is answered with a status when it can be and the
connection is closed: the server cannot find the next frame in the stream. A frame that stops arriving for 5 s
once started, a client that disconnects mid-transfer, or any number of simultaneous connections (up to 32;
more are closed at once) leave the boards as they were.

Vendor command 0x80 is f4load's side channel: the board's virtual clock and its USB command count, so f4load
and the bench can report virtual seconds and transactions on the ST-Link route. The server announces it in
GET_SERVER_VERSION: API 3, f4load's version, build number 0xF410AD; a client sends 0x80 only to a server that
says so (ST's stlink-server does not know it).

**One client per ST-Link.** A second client that asks to open a board already open is refused: GET_DEV_INFO
shows it in use (byte 44 = 1; OpenOCD then stops with "the selected device is already used") and OPEN_DEV
answers OPEN_ERR. ST's stlink-server shares an ST-Link between applications (OpenOCD's source says so: RW_MISC
sequences are locked from API v3 "in case of sharing"), so that, for example, a monitor can read memory while
a debugger runs; but two debuggers interleaving halts, resets and flash writes on one core leave neither with
a correct result, the clients treat the in-use flag as "refuse", and f4load's in-process board refuses a second
session too. Listing devices, reading the version and the board clock are open to every connection.

**Time.** While a client has a board open, its virtual time passes per USB command (usb_link.py): what the
client does between commands (computing, sleeping) costs nothing, as on the in-process route. When the client
closes the board or goes away (killed, crashed, cable pulled), the board keeps running as a real one would:
first it runs on until its flash is idle (the erase or program in flight completes; at most 5 s of virtual
time), then, while no client has it open, its virtual clock follows the wall clock (steps of 20 ms, at most
100 ms of virtual time per step: a core that the simulation cannot run in real time falls behind). A halted
core stays halted, a stub keeps waiting, an NRST held low stays low, the ST-Link stays in the mode it was left in.

**Persistence.** Flash, option bytes and OTP are saved to the board's state directory (state.py) at most 1 s
after they change, when a client closes or loses a board, and when the server stops (SIGTERM, SIGINT: the
flash operation in flight completes first). A kill of a client loses nothing; a kill -9 of the server loses at
most the last second of flash changes. Each board's state directory is locked while it is served (a pyocd
`f4sim:NAME` session on the same board is refused with "in use by pid N").
"""
from __future__ import annotations

import hashlib
import logging
import socket
import socketserver
import struct
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from f4load.sim.clock import PS_PER_MS, PS_PER_S
from f4load.sim.stlink import PERSONALITIES, ST_VID, Personality, StLinkFirmware

LOG = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7184

# TCP commands (byte 0 of a request).
REFRESH_DEVICE_LIST = 0x00
GET_NB_DEV = 0x01
GET_DEV_INFO = 0x02
OPEN_DEV = 0x03
CLOSE_DEV = 0x04
SEND_USB_CMD = 0x05
GET_SERVER_VERSION = 0x06
F4LOAD_BOARD_CLOCK = 0x80

# TCP status words.
TCP_OK = 0x0000_0001
TCP_BAD_PARAMETER = 0x0000_1002
TCP_OPEN_ERR = 0x0000_1003
TCP_CMD_NOT_AVAILABLE = 0x0000_1053

DIRECTION_OUT, DIRECTION_IN, DIRECTION_SWO = 0, 1, 3
API_VERSION = 3
SERVER_BUILD_MARK = 0xF4_10AD  # "f4load": the server knows F4LOAD_BOARD_CLOCK
DEVICE_INFO_SIZE = 41
SERIAL_FIELD = 32
MAX_DATA = 10240 - 32  # the largest data phase a client sends (OpenOCD's 10240-byte buffer)
FRAME_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 32

SETTLE_LIMIT_PS = 5 * PS_PER_S
FREE_RUN_STEP_S = 0.02
FREE_RUN_MAX_PS = 100 * PS_PER_MS
SAVE_INTERVAL_S = 1.0
# A client that asks for a board whose owner has just gone (its socket closed, its thread not yet done releasing
# the board) waits this long for the release instead of being refused: the next run after a killed one must not
# depend on which thread the scheduler runs first.
RELEASE_WAIT_S = 5.0


class ServeError(Exception):
    """The server cannot start (a board's state directory, the address). One line."""


def stlink_serial(unique_id: bytes) -> str:
    """The 24-hex-digit serial number of the ST-Link in front of the chip with `unique_id` (stable per board)."""
    return hashlib.sha256(b"f4load virtual ST-Link " + bytes(unique_id)).hexdigest()[:24].upper()


class Board:
    """One virtual board: an STM32F407 from its state directory (held locked), its debug port, the ST-Link.

    Every access to the chip holds `mutex`: the connection that owns the board, the free-running clock and
    the saver take turns.
    """

    def __init__(self, name: Optional[str], directory: Path, personality: Personality, fault_spec: str = "") -> None:
        from f4load.sim import state as sim_state
        from f4load.sim.chip import Chip
        from f4load.sim.debug_port import DebugPort
        from f4load.sim.faults import FaultSpecError, parse_fault_spec

        self.name = name or "default"
        self.directory = directory
        try:
            self._lock = sim_state.lock_state(directory)
        except sim_state.SimStateError as error:
            raise ServeError(f"board {self.name}: {error}") from None
        try:
            chip_state = sim_state.load_state(directory)
            if fault_spec.strip():
                chip_state.faults = parse_fault_spec(fault_spec, chip_state.faults)
                sim_state.program_option_faults(chip_state.options, chip_state.faults)
        except (sim_state.SimStateError, FaultSpecError) as error:
            self._lock.release()
            raise ServeError(f"board {self.name}: {error}") from None
        self.chip = Chip(chip_state.faults, chip_state)
        self.chip.power_on()
        self.chip.on_flash_operation = self._flash_operation
        self.port = DebugPort(self.chip)
        self.firmware = StLinkFirmware(personality, self.port)
        self.serial = stlink_serial(self.chip.unique_id)
        self.mutex = threading.RLock()
        self.owner: Optional[int] = None  # the connect id of the client that has the ST-Link open
        self.owner_socket: Optional[socket.socket] = None  # that client's connection
        self.owner_commands = 0
        self._dirty = False
        self._save_lock = threading.Lock()
        self._disconnect_after = chip_state.faults.disconnect_after_commands

    def _flash_operation(self, kind: str, phase: str) -> None:
        if phase in ("end", "cut"):
            self._dirty = True

    @property
    def label(self) -> str:
        return f"board {self.name} (ST-Link {self.serial}, {self.firmware.personality.version})"

    # --- the ST-Link -------------------------------------------------------------------------------------
    def usb_command(self, cdb: bytes, out: bytes, in_length: int) -> bytes:
        with self.mutex:
            self.owner_commands += 1
            return self.firmware.command(cdb, out, in_length)

    def link_lost(self) -> bool:
        """The `disconnect` fault: the USB link drops after that many commands of one client."""
        return self._disconnect_after is not None and self.owner_commands >= self._disconnect_after

    def clock(self) -> Tuple[int, int]:
        """(virtual time in ps, USB commands so far)."""
        with self.mutex:
            return self.chip.clock.now_ps, self.firmware.commands

    # --- time without a client ---------------------------------------------------------------------------
    def settle(self, limit_ps: int = SETTLE_LIMIT_PS) -> None:
        """Run on until the flash is idle (the operation in flight completes), at most `limit_ps`."""
        with self.mutex:
            chip = self.chip
            end = chip.clock.now_ps + limit_ps
            while chip.flash.busy and chip.clock.now_ps < end:
                until = chip.flash.busy_until_ps()
                if until is None:
                    break  # BSY stuck: nothing ends it but a reset
                chip.advance(max(min(until, end) - chip.clock.now_ps, 1))

    def free_run(self, ps: int) -> None:
        with self.mutex:
            if self.owner is None:
                self.chip.advance(ps)

    # --- persistence -------------------------------------------------------------------------------------
    def save(self, force: bool = False) -> None:
        """Write flash, option bytes and OTP to the state directory if they changed (or `force`)."""
        from f4load.sim import state as sim_state

        with self._save_lock:
            with self.mutex:
                if not (self._dirty or force):
                    return
                self._dirty = False
                snapshot = self.chip.to_state()
            try:
                sim_state.save_state(snapshot, self.directory)
            except sim_state.SimStateError as error:
                self._dirty = True
                LOG.error("%s: cannot save: %s", self.name, error)

    def close(self) -> None:
        self.settle()
        self.save(force=True)
        self._lock.release()


class StLinkServer:
    """The TCP server: boards, connections, the free-running clock and the saver (module docstring)."""

    def __init__(self, boards: List[Board], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        self.boards = boards
        self._connect_ids = iter(range(1, 1 << 31))
        self._ids_lock = threading.Lock()
        self._stop = threading.Event()
        self._connections: Set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        try:
            self._tcp = _TcpServer((host, port), self)
        except OSError as error:
            raise ServeError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
        self._clock_thread = threading.Thread(target=self._run_boards, name="board-clock", daemon=True)

    @property
    def address(self) -> Tuple[str, int]:
        host, port = self._tcp.server_address[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        """Serve until `stop()`; then close every connection and every board (settled and saved)."""
        self._clock_thread.start()
        try:
            self._tcp.serve_forever(poll_interval=0.2)
        finally:
            self._stop.set()
            self._tcp.server_close()
            with self._connections_lock:
                for sock in list(self._connections):
                    _shutdown(sock)
            self._clock_thread.join(timeout=5)
            for board in self.boards:
                with board.mutex:
                    board.owner, board.owner_socket = None, None
                board.close()
                LOG.info("%s saved to %s", board.name, board.directory)

    def stop(self) -> None:
        """Ask `serve_forever` to return (from any thread or a signal handler)."""
        if not self._stop.is_set():
            self._stop.set()
            threading.Thread(target=self._tcp.shutdown, daemon=True).start()

    def next_connect_id(self) -> int:
        with self._ids_lock:
            return next(self._connect_ids)

    # --- connections -------------------------------------------------------------------------------------
    def register(self, sock: socket.socket) -> bool:
        with self._connections_lock:
            if len(self._connections) >= MAX_CONNECTIONS or self._stop.is_set():
                return False
            self._connections.add(sock)
            return True

    def unregister(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(sock)

    def board_by_id(self, device_id: int) -> Optional[Board]:
        return self.boards[device_id] if 0 <= device_id < len(self.boards) else None

    # --- boards without a client ---------------------------------------------------------------------------
    def _run_boards(self) -> None:
        last = time.monotonic()
        last_save = last
        while not self._stop.wait(FREE_RUN_STEP_S):
            now = time.monotonic()
            step = min(int((now - last) * PS_PER_S), FREE_RUN_MAX_PS)
            last = now
            for board in self.boards:
                try:
                    board.free_run(step)
                except Exception:  # noqa: BLE001 - a model error must not stop the other boards
                    LOG.exception("%s: the board stopped running", board.name)
            if now - last_save >= SAVE_INTERVAL_S:
                last_save = now
                for board in self.boards:
                    board.save()


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 2 * MAX_CONNECTIONS  # the listen backlog: more at once are accepted, then closed

    def __init__(self, address: Tuple[str, int], owner: StLinkServer) -> None:
        self.owner = owner
        super().__init__(address, _Connection)


class _Closed(Exception):
    """The client went away, or the stream cannot be followed any more."""


class _Connection(socketserver.BaseRequestHandler):
    """One client connection: frames in, replies out, until the client goes or the stream breaks."""

    server: _TcpServer

    def setup(self) -> None:
        self.sock: socket.socket = self.request
        self.owner = self.server.owner
        self.opened: Dict[int, Board] = {}  # connect id -> board
        self.peer = f"{self.client_address[0]}:{self.client_address[1]}"
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        if not self.owner.register(self.sock):
            LOG.warning("client %s refused: %d connections already", self.peer, MAX_CONNECTIONS)
            return
        LOG.info("client %s connected", self.peer)
        reason = "disconnected"
        try:
            while True:
                head = self._receive(1, first=True)
                self._frame(head[0])
        except _Closed as closed:
            reason = str(closed) or reason
        except OSError as error:
            reason = f"connection error: {error}"
        except Exception:  # noqa: BLE001 - one broken connection must not take the server down
            LOG.exception("client %s: internal error", self.peer)
            reason = "internal error"
        finally:
            self.owner.unregister(self.sock)
            self._release_all(reason)

    def finish(self) -> None:
        _shutdown(self.sock)

    # --- framing -----------------------------------------------------------------------------------------
    def _receive(self, count: int, first: bool = False) -> bytes:
        """Exactly `count` bytes. Between frames the client may be silent as long as it likes; inside a frame
        every byte must come within FRAME_TIMEOUT_S."""
        data = bytearray()
        while len(data) < count:
            self.sock.settimeout(None if first and not data else FRAME_TIMEOUT_S)
            try:
                chunk = self.sock.recv(count - len(data))
            except socket.timeout:
                raise _Closed("truncated frame (nothing more for 5 s)") from None
            if not chunk:
                raise _Closed("disconnected" if first and not data else "disconnected in the middle of a frame")
            data += chunk
        return bytes(data)

    def _send(self, data: bytes) -> None:
        self.sock.settimeout(FRAME_TIMEOUT_S * 6)
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise _Closed("the client stopped reading") from None

    def _frame(self, command: int) -> None:
        if command == SEND_USB_CMD:
            self._usb_command(self._receive(31))
        elif command == REFRESH_DEVICE_LIST:
            self._receive(1)
            self._send(_u32(TCP_OK))
        elif command == GET_NB_DEV:
            self._send(_u32(len(self.owner.boards)))
        elif command == GET_DEV_INFO:
            self._device_info(self._receive(7))
        elif command == OPEN_DEV:
            self._open(_field(self._receive(7), 3))
        elif command == CLOSE_DEV:
            self._close(_field(self._receive(7), 3))
        elif command == GET_SERVER_VERSION:
            self._receive(3)
            self._send(struct.pack("<4I", API_VERSION, *_version(), SERVER_BUILD_MARK))
        elif command == F4LOAD_BOARD_CLOCK:
            board = self.owner.board_by_id(_field(self._receive(7), 3))
            if board is None:
                self._send(_u32(TCP_BAD_PARAMETER) + bytes(16))
            else:
                now_ps, commands = board.clock()
                self._send(_u32(TCP_OK) + struct.pack("<QQ", now_ps, commands))
        else:
            self._send(_u32(TCP_CMD_NOT_AVAILABLE))
            raise _Closed(f"unknown command {command:#04x}: closed (the next frame cannot be found)")

    def _device_info(self, request: bytes) -> None:
        index, size = request[0], _field(request, 3)
        if size > 1024:
            self._send(_u32(TCP_BAD_PARAMETER))
            raise _Closed(f"GET_DEV_INFO asks {size} bytes: closed")
        board = self.owner.board_by_id(index)
        if board is None:
            self._send(_u32(TCP_BAD_PARAMETER) + bytes(size))
            return
        personality = board.firmware.personality
        info = (struct.pack("<I", index) + board.serial.encode("ascii").ljust(SERIAL_FIELD, b"\0")
                + struct.pack("<HHB", ST_VID, personality.pid, 1 if board.owner is not None else 0))
        self._send(_u32(TCP_OK) + info[:size].ljust(size, b"\0"))

    def _open(self, device_id: int) -> None:
        board = self.owner.board_by_id(device_id)
        if board is None:
            self._send(_u32(TCP_BAD_PARAMETER) + bytes(4))
            return
        deadline = time.monotonic() + RELEASE_WAIT_S
        while True:
            with board.mutex:
                if board.owner is None:
                    connect_id = self.owner.next_connect_id()
                    board.owner, board.owner_socket, board.owner_commands = connect_id, self.sock, 0
                    status = TCP_OK
                    break
                owner_gone = board.owner_socket is not None and _peer_gone(board.owner_socket)
            if not owner_gone or time.monotonic() > deadline:
                status, connect_id = TCP_OPEN_ERR, 0
                break
            time.sleep(0.01)  # the owner's connection is closing: its thread releases the board in a moment
        if status == TCP_OK:
            self.opened[connect_id] = board
            LOG.info("client %s opened %s", self.peer, board.label)
        else:
            LOG.warning("client %s refused: %s is open by another client", self.peer, board.name)
        self._send(_u32(status) + _u32(connect_id))

    def _close(self, connect_id: int) -> None:
        board = self.opened.get(connect_id)
        if board is None:
            self._send(_u32(TCP_BAD_PARAMETER))
            return
        self._release(connect_id, "closed it")
        self._send(_u32(TCP_OK))

    def _usb_command(self, header: bytes) -> None:
        connect_id = _field(header, 3)
        cdb = header[7:23]
        direction, length = header[23], _field(header, 27)
        if direction not in (DIRECTION_OUT, DIRECTION_IN, DIRECTION_SWO) or length > MAX_DATA:
            self._send(_u32(TCP_BAD_PARAMETER))
            raise _Closed(f"USB command with direction {direction} and {length} bytes: closed")
        out = self._receive(length) if direction == DIRECTION_OUT and length else b""
        in_length = 0 if direction == DIRECTION_OUT else length
        board = self.opened.get(connect_id)
        if board is None:
            self._send(_u32(TCP_BAD_PARAMETER) + bytes(in_length))
            return
        if direction == DIRECTION_SWO:
            data = bytes(in_length)  # no trace: nothing was captured
        else:
            data = board.usb_command(cdb, out, in_length)
        self._send(_u32(TCP_OK) + data)
        if board.link_lost():
            raise _Closed(f"link lost after {board.owner_commands} USB commands (injected fault)")

    # --- letting go of boards ------------------------------------------------------------------------------
    def _release(self, connect_id: int, reason: str) -> None:
        board = self.opened.pop(connect_id)
        with board.mutex:
            if board.owner == connect_id:
                board.owner, board.owner_socket = None, None
        LOG.info("client %s %s: %s runs on", self.peer, reason, board.name)
        board.settle()
        board.save()

    def _release_all(self, reason: str) -> None:
        for connect_id in list(self.opened):
            self._release(connect_id, reason)
        LOG.info("client %s gone (%s)", self.peer, reason)


def _peer_gone(sock: socket.socket) -> bool:
    """Whether the client at the other end of `sock` has closed its side (a read would return end of file)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _u32(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFF_FFFF)


def _field(data: bytes, offset: int) -> int:
    """The u32 at request offset `offset + 1` (the data given starts after the command byte)."""
    return int(struct.unpack_from("<I", data, offset)[0])


def _version() -> Tuple[int, int]:
    """(major, minor) of f4load."""
    from f4load import __version__

    parts = (__version__.split(".") + ["0", "0"])[:2]
    return int(parts[0]) if parts[0].isdigit() else 0, int(parts[1]) if parts[1].isdigit() else 0


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# --- building a server ---------------------------------------------------------------------------------------

def open_boards(names: List[Optional[str]], state: Optional[str], link: str, fault_spec: str = "") -> List[Board]:
    """The boards to serve: `names` (None: the default board) in the state directory `state`, each behind
    an ST-Link of personality `link`. ServeError (one line) when one cannot be used; none is left locked."""
    from f4load.sim import state as sim_state

    if link not in PERSONALITIES:
        raise ServeError(f"unknown ST-Link {link!r} (choose one of {', '.join(sorted(PERSONALITIES))})")
    boards: List[Board] = []
    try:
        for name in names:
            try:
                directory = sim_state.board_dir(name, state)
            except sim_state.SimStateError as error:
                raise ServeError(str(error)) from None
            boards.append(Board(name, directory, PERSONALITIES[link], fault_spec))
    except BaseException:
        for board in boards:
            board._lock.release()
        raise
    return boards
