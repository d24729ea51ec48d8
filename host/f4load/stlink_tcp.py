"""pyocd's own ST-Link driver over the ST-Link TCP server protocol: the pyocd probe plugin `stlink-tcp`.

pyocd talks to an ST-Link only over USB (libusb), but its `StlinkProbe` and `STLink` classes use the USB
device only through a small object: `open`, `close`, `is_open`, `transfer(cmd, writeData, readSize, timeout)`,
`max_packet_size`, `serial_number`, `vendor_name`, `product_name`, `read_swv`. `StlinkTcpDevice` is that
object, carrying each command over TCP to an ST-Link server (one SEND_USB_CMD request per USB command,
docs/stlink.md and `f4load.sim.server` for the framing), so that

    pyocd flash -u stlink-tcp:127.0.0.1:7184 -t f4load_stm32f407xe app.bin
    f4load --probe stlink-tcp:127.0.0.1:7184 app.bin

run pyocd's real ST-Link code (`StlinkTcpProbe` is pyocd's `StlinkProbe`, with only the finding of devices
and the board ID replaced) against `f4load-sim serve`, or against ST's own stlink-server on a workstation,
which shares a USB ST-Link between applications. The second is written to the protocol as OpenOCD speaks it
and has not been tried on hardware yet.

Unique ID: `stlink-tcp:HOST:PORT[:SERIAL]` (IPv4 address or host name; `stlink-tcp:` alone is
127.0.0.1:7184); without SERIAL the server's first ST-Link. The probe is listed only when asked for by type
(a plain `pyocd list` does not look for servers on the network). A server that cannot be reached, or an
ST-Link another client has open, is a one-line ProbeError.

f4load's server also tells its virtual clock (vendor command 0x80, announced by build number 0xF410AD in
GET_SERVER_VERSION): the probe's `clock` (`now_ps`, `seconds`) and `commands` (USB commands so far) then
read the board's, so f4load and the bench report virtual seconds and USB transactions on this route. Against
any other server they are None.

Timeouts: a reply may take longer in wall time than a USB transfer would (the server simulates the chip for
the transaction's virtual time), so the socket waits up to 60 s instead of pyocd's 1 s USB timeout.

Imports: pyocd imports the plugin (`stlink_tcp_plugin.py`, entry point `pyocd.probe`) at start-up for every
command, so it stays small. This module imports pyocd only inside functions: any pyocd import runs pyocd's
plugin loading, which would find this module half imported had it been imported first (`probe_class` defines
the probe class on first use, from pyocd's ST-Link driver, which pyocd has loaded by then anyway).
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, List, Optional, Sequence, Tuple

PROBE_TYPE = "stlink-tcp"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7184
SOCKET_TIMEOUT_S = 60.0

# The ST-Link TCP server protocol (f4load.sim.server; ../shared/reference/stlink.md section 1).
REFRESH_DEVICE_LIST, GET_NB_DEV, GET_DEV_INFO, OPEN_DEV, CLOSE_DEV, SEND_USB_CMD, GET_SERVER_VERSION = range(7)
F4LOAD_BOARD_CLOCK = 0x80
F4LOAD_BUILD_MARK = 0xF4_10AD
CLIENT_API_VERSION = 1
TCP_OK, TCP_OPEN_ERR, TCP_BUSY = 0x1, 0x1003, 0x2004
DIRECTION_OUT, DIRECTION_IN, DIRECTION_SWO = 0, 1, 3
DEVICE_INFO_SIZE = 41
BUSY_RETRIES = 8

ST_VID = 0x0483
# USB product strings and bulk packet sizes by PID (pyocd's STLinkUSBInterface.USB_PID_EP_MAP).
FULL_SPEED_PIDS = {0x3748: "STM32 STLink", 0x374A: "STM32 STLink", 0x374B: "STM32 STLink", 0x3752: "STM32 STLink"}
HIGH_SPEED_PIDS = {0x374E: "STLINK-V3", 0x374F: "STLINK-V3", 0x3753: "STLINK-V3", 0x3754: "STLINK-V3",
                   0x3755: "STLINK-V3", 0x3757: "STLINK-V3"}


def _errors() -> ModuleType:
    """pyocd's exceptions (ProbeError, ProbeDisconnected), imported when first needed (module docstring)."""
    from pyocd.core import exceptions

    return exceptions


def parse_unique_id(text: str) -> Tuple[str, int, Optional[str]]:
    """`HOST:PORT[:SERIAL]` (what follows `stlink-tcp:`) -> (host, port, serial or None)."""
    fields = text.split(":") if text else []
    host = fields[0] if fields and fields[0] else DEFAULT_HOST
    port = DEFAULT_PORT
    if len(fields) > 1 and fields[1]:
        if not fields[1].isdigit() or not 0 < int(fields[1]) < 65536:
            raise _errors().ProbeError(f"{PROBE_TYPE}:{text}: the port must be a number 1-65535 "
                                        f"(form {PROBE_TYPE}:HOST:PORT[:SERIAL])")
        port = int(fields[1])
    if len(fields) > 3:
        raise _errors().ProbeError(f"{PROBE_TYPE}:{text}: use {PROBE_TYPE}:HOST:PORT[:SERIAL]")
    serial = fields[2] if len(fields) > 2 and fields[2] else None
    return host, port, serial


@dataclass(frozen=True)
class DeviceInfo:
    """One ST-Link as the server lists it (GET_DEV_INFO)."""
    device_id: int
    serial: str
    vid: int
    pid: int
    in_use: bool

    @property
    def product(self) -> str:
        return FULL_SPEED_PIDS.get(self.pid) or HIGH_SPEED_PIDS.get(self.pid) or "ST-Link"

    @property
    def max_packet_size(self) -> int:
        return 512 if self.pid in HIGH_SPEED_PIDS else 64


class ServerConnection:
    """One TCP connection to an ST-Link server: requests and replies in lock-step."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        try:
            self._sock = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
        except OSError as error:
            raise _errors().ProbeError(f"cannot reach the ST-Link server at {host}:{port}: "
                                        f"{error.strerror or error}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.api, self.major, self.minor, self.build = struct.unpack(
            "<4I", self._exchange(struct.pack("<BBH", GET_SERVER_VERSION, CLIENT_API_VERSION, 0), 16))

    @property
    def is_f4load(self) -> bool:
        """f4load's own server (f4load.sim.server), which also answers F4LOAD_BOARD_CLOCK."""
        return self.build == F4LOAD_BUILD_MARK

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    # --- the exchange ------------------------------------------------------------------------------------
    def _exchange(self, request: bytes, reply_length: int) -> bytes:
        try:
            self._sock.sendall(request)
            reply = bytearray()
            while len(reply) < reply_length:
                chunk = self._sock.recv(reply_length - len(reply))
                if not chunk:
                    raise OSError("the server closed the connection")
                reply += chunk
        except OSError as error:
            self.close()
            raise _errors().ProbeDisconnected(
                f"lost the ST-Link server at {self.host}:{self.port}: {error.strerror or error}") from None
        return bytes(reply)

    def _request(self, request: bytes, reply_length: int, what: str) -> bytes:
        """A request whose reply starts with a status word; the rest of the reply after it."""
        for attempt in range(BUSY_RETRIES + 1):
            reply = self._exchange(request, 4 + reply_length)
            status = struct.unpack_from("<I", reply)[0]
            if status == TCP_OK:
                return reply[4:]
            if status != TCP_BUSY or attempt == BUSY_RETRIES:
                break
            time.sleep((1 << attempt) / 1000)  # the server is busy with another client's command: back off
        raise _errors().ProbeError(f"ST-Link server {self.host}:{self.port}: {what} failed "
                                    f"(status {status:#x}{', busy' if status == TCP_BUSY else ''})")

    # --- requests ------------------------------------------------------------------------------------------
    def devices(self) -> List[DeviceInfo]:
        self._request(struct.pack("<BB", REFRESH_DEVICE_LIST, 0), 0, "refreshing the device list")
        count = struct.unpack("<I", self._exchange(bytes([GET_NB_DEV]), 4))[0]
        out = []
        for index in range(min(count, 255)):
            info = self._request(struct.pack("<BBHI", GET_DEV_INFO, index, 0, DEVICE_INFO_SIZE),
                                 DEVICE_INFO_SIZE, "reading the device list")
            device_id, raw_serial, vid, pid, in_use = struct.unpack("<I32sHHB", info)
            serial = raw_serial.split(b"\0", 1)[0].decode("ascii", "replace")
            out.append(DeviceInfo(device_id, serial, vid, pid, bool(in_use)))
        return out

    def open_device(self, device: DeviceInfo) -> int:
        reply = self._exchange(struct.pack("<BBHI", OPEN_DEV, 0, 0, device.device_id), 8)
        status, connect_id = struct.unpack("<II", reply)
        if status == TCP_OPEN_ERR:
            raise _errors().ProbeError(f"the ST-Link {device.serial} on {self.host}:{self.port} is in use by "
                                        "another client of the server")
        if status != TCP_OK:
            raise _errors().ProbeError(f"ST-Link server {self.host}:{self.port}: opening {device.serial} "
                                        f"failed (status {status:#x})")
        return int(connect_id)

    def close_device(self, connect_id: int) -> None:
        self._request(struct.pack("<BBHI", CLOSE_DEV, 0, 0, connect_id), 0, "closing the ST-Link")

    def usb_command(self, connect_id: int, cdb: bytes, out: bytes = b"", in_length: int = 0,
                    swo: bool = False) -> bytes:
        direction = DIRECTION_SWO if swo else (DIRECTION_OUT if out else DIRECTION_IN)
        length = len(out) if direction == DIRECTION_OUT else in_length
        header = struct.pack("<BBHI16sBBHI", SEND_USB_CMD, 0, 0, connect_id, bytes(cdb[:16]).ljust(16, b"\0"),
                             direction, 0, 0, length)
        return self._request(header + bytes(out), 0 if direction == DIRECTION_OUT else in_length,
                             f"USB command {bytes(cdb[:2]).hex()}")

    def board_clock(self, device_id: int) -> Optional[Tuple[int, int]]:
        """(virtual time in ps, USB commands so far) of a board of f4load's server; None from another server."""
        if not self.is_f4load:
            return None
        now_ps, commands = struct.unpack(
            "<QQ", self._request(struct.pack("<BBHI", F4LOAD_BOARD_CLOCK, 0, 0, device_id), 16, "board clock"))
        return int(now_ps), int(commands)


def list_devices(host: str, port: int) -> List[DeviceInfo]:
    connection = ServerConnection(host, port)
    try:
        return connection.devices()
    finally:
        connection.close()


class StlinkTcpDevice:
    """What pyocd's `STLink` needs of a USB device, carried over one TCP connection to the server."""

    def __init__(self, host: str, port: int, info: DeviceInfo) -> None:
        self.host, self.port, self.info = host, port, info
        self._connection: Optional[ServerConnection] = None
        self._connect_id = 0
        self._lock = threading.RLock()  # one exchange at a time on the connection

    # identity (pyocd STLinkUSBInterface's properties)
    @property
    def serial_number(self) -> str:
        return self.info.serial

    @property
    def vendor_name(self) -> str:
        return "STMicroelectronics"

    @property
    def product_name(self) -> str:
        return self.info.product

    @property
    def version_name(self) -> str:
        return "V3" if self.info.pid in HIGH_SPEED_PIDS else "V2-1"

    @property
    def max_packet_size(self) -> int:
        return self.info.max_packet_size

    @property
    def is_open(self) -> bool:
        return self._connection is not None

    def open(self) -> None:
        connection = ServerConnection(self.host, self.port)
        try:
            self._connect_id = connection.open_device(self.info)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.close_device(self._connect_id)
        except _errors().ProbeError:
            pass  # the server went away: nothing left to close
        finally:
            connection.close()

    def _open_connection(self) -> ServerConnection:
        if self._connection is None:
            raise _errors().ProbeError(f"the ST-Link {self.info.serial} is not open")
        return self._connection

    def transfer(self, cmd: Sequence[int], writeData: Optional[Sequence[int]] = None,  # noqa: N803 - pyocd's
                 readSize: Optional[int] = None, timeout: int = 1000) -> Optional[bytearray]:  # noqa: N803 names
        with self._lock:
            reply = self._open_connection().usb_command(self._connect_id, bytes(cmd), bytes(writeData or b""),
                                                        readSize or 0)
        return bytearray(reply) if readSize is not None else None

    def read_swv(self, size: int, timeout: int = 1000) -> bytearray:
        with self._lock:
            return bytearray(self._open_connection().usb_command(self._connect_id, b"", b"", size, swo=True))

    def board_clock(self) -> Optional[Tuple[int, int]]:
        """The board's (virtual ps, USB commands) from f4load's server (None from another server), asked on
        the device's connection while it is open, else on a connection of its own."""
        with self._lock:
            if self._connection is not None:
                return self._connection.board_clock(self.info.device_id)
        connection = ServerConnection(self.host, self.port)
        try:
            return connection.board_clock(self.info.device_id)
        finally:
            connection.close()

    def __repr__(self) -> str:
        return f"<StlinkTcpDevice {self.host}:{self.port} sn={self.info.serial} pid={self.info.pid:#06x}>"


class RemoteClock:
    """The virtual clock of a board of f4load's server (`now_ps`, `seconds`), read when asked."""

    def __init__(self, device: StlinkTcpDevice) -> None:
        self._device = device

    @property
    def now_ps(self) -> int:
        clock = self._device.board_clock()
        return clock[0] if clock is not None else 0

    @property
    def seconds(self) -> float:
        return self.now_ps / 1e12


_PROBE_CLASS: Optional[type] = None


def probe_class() -> type:
    """`StlinkTcpProbe`: pyocd's `StlinkProbe` on a device reached through an ST-Link server (module
    docstring), defined on first use."""
    global _PROBE_CLASS
    if _PROBE_CLASS is None:
        from pyocd.probe.stlink_probe import StlinkProbe

        class StlinkTcpProbe(StlinkProbe):
            """pyocd's `StlinkProbe` on a device reached through an ST-Link server (module docstring)."""

            @classmethod
            def get_all_connected_probes(cls, unique_id: Optional[str] = None,
                                         is_explicit: bool = False) -> List[Any]:
                if not is_explicit:
                    return []  # never scan for servers unasked
                host, port, _serial = parse_unique_id(unique_id or "")
                return [cls(StlinkTcpDevice(host, port, info)) for info in list_devices(host, port)]

            @classmethod
            def get_probe_with_id(cls, unique_id: str, is_explicit: bool = False) -> Optional[Any]:
                if not is_explicit:
                    return None
                host, port, serial = parse_unique_id(unique_id)
                devices = list_devices(host, port)
                if not devices:
                    raise _errors().ProbeError(f"the ST-Link server at {host}:{port} has no ST-Link")
                if serial is None:
                    return cls(StlinkTcpDevice(host, port, devices[0]))
                for info in devices:
                    if info.serial.lower() == serial.lower():
                        return cls(StlinkTcpDevice(host, port, info))
                raise _errors().ProbeError(f"no ST-Link with serial {serial} on the server at {host}:{port} (it has "
                                            f"{', '.join(d.serial for d in devices)})")

            def __init__(self, device: StlinkTcpDevice) -> None:
                super().__init__(device)  # type: ignore[arg-type] # the USB device's interface, over TCP
                self._tcp_device = device

            @property
            def unique_id(self) -> str:
                device = self._tcp_device
                return f"{device.host}:{device.port}:{device.serial_number}"

            @property
            def description(self) -> str:
                device = self._tcp_device
                return f"{device.product_name} {device.serial_number} via ST-Link server {device.host}:{device.port}"

            def _get_board_id(self) -> Optional[str]:
                # Only the firmware's answer: the ST-Link's mass-storage volume is on the server's machine, not here.
                return self._link.get_board_id()  # type: ignore[no-any-return]

            # --- f4load's server: virtual time and USB commands -----------------------------------------------------
            @property
            def clock(self) -> Optional[RemoteClock]:
                """The board's virtual clock on f4load's server (None on another server)."""
                return RemoteClock(self._tcp_device) if self._tcp_device.board_clock() is not None else None

            @property
            def commands(self) -> Optional[int]:
                """USB commands the board's ST-Link has run (f4load's server only)."""
                clock = self._tcp_device.board_clock()
                return clock[1] if clock is not None else None

        _PROBE_CLASS = StlinkTcpProbe
    return _PROBE_CLASS
