"""`f4load-sim serve`: virtual boards behind virtual ST-Links, over the ST-Link TCP server protocol.

Each test starts the server as a subprocess (the `stlink_server` fixture), as a user would, and talks to it
with f4load's client of the protocol (`f4load.stlink_tcp.ServerConnection`) or with raw bytes where the point
is what the server does with bad input.
"""
from __future__ import annotations

import random
import socket
import struct
import time
from pathlib import Path
from typing import List

import pytest
from pyocd.core import exceptions

from f4load import registers as reg
from f4load.image import Image
from f4load.session import Session
from f4load.sim import state as sim_state
from f4load.sim import stlink
from f4load.sim.server import TCP_BAD_PARAMETER, TCP_CMD_NOT_AVAILABLE
from f4load.stlink_tcp import ServerConnection

SRAM = 0x2000_0000
SECTOR_1 = 0x0800_4000


def connect(server) -> ServerConnection:
    return ServerConnection("127.0.0.1", server.port)


def debug_session(server, index: int = 0):
    """(connection, connect id) of an opened ST-Link in SWD debug mode, AP 0 open."""
    connection = connect(server)
    connect_id = connection.open_device(connection.devices()[index])
    usb(connection, connect_id, stlink.DEBUG_COMMAND, stlink.ENTER, stlink.ENTER_SWD, read=2)
    usb(connection, connect_id, stlink.DEBUG_COMMAND, stlink.INIT_AP, 0, read=2)
    return connection, connect_id


def start_erase_of_sector_1(connection: ServerConnection, connect_id: int) -> None:
    """Unlock FLASH_CR with the two keys and start the erase of sector 1 at x32 (RM0090 3.6.3), as a host would."""
    write_word(connection, connect_id, reg.FLASH_KEYR, reg.FLASH_KEY1)
    write_word(connection, connect_id, reg.FLASH_KEYR, reg.FLASH_KEY2)
    write_word(connection, connect_id, reg.FLASH_CR, (2 << 8) | reg.FLASH_CR_SER | (1 << 3) | reg.FLASH_CR_STRT)


def usb(connection: ServerConnection, connect_id: int, *cdb: int, out: bytes = b"", read: int = 0) -> bytes:
    return connection.usb_command(connect_id, bytes(cdb), out, read)


def write_word(connection: ServerConnection, connect_id: int, address: int, value: int) -> int:
    reply = usb(connection, connect_id, stlink.DEBUG_COMMAND, stlink.WRITEDEBUGREG,
                *struct.pack("<II", address, value), read=2)
    return reply[0]


def read_word(connection: ServerConnection, connect_id: int, address: int) -> int:
    reply = usb(connection, connect_id, stlink.DEBUG_COMMAND, stlink.READDEBUGREG, *struct.pack("<I", address),
                read=8)
    assert reply[0] == stlink.OK
    return int(struct.unpack("<I", reply[4:8])[0])


def read_block(connection: ServerConnection, connect_id: int, address: int, length: int) -> bytes:
    return usb(connection, connect_id, stlink.DEBUG_COMMAND, stlink.READMEM_32BIT,
               *struct.pack("<IH", address, length), read=length)


def raw_exchange(port: int, request: bytes, reply_length: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while len(reply) < reply_length:
            chunk = sock.recv(reply_length - len(reply))
            if not chunk:
                break
            reply += chunk
        return reply


def connection_closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    return True


def flash_with(state_dir: Path, fill: bytes) -> None:
    """Put `fill` (repeated) in the whole flash of the board in `state_dir` before the server starts."""
    chip = sim_state.reset_state(state_dir)
    chip.flash[:] = (fill * (len(chip.flash) // len(fill) + 1))[:len(chip.flash)]
    sim_state.save_state(chip, state_dir)


# --- the protocol as clients use it -------------------------------------------------------------------------
def test_the_server_lists_one_st_link_per_board_and_announces_itself(stlink_server) -> None:
    server = stlink_server(boards=("left", "right"))
    connection = connect(server)
    assert connection.api == 3 and connection.is_f4load
    devices = connection.devices()
    assert [d.pid for d in devices] == [0x374F, 0x374F] and [d.vid for d in devices] == [0x0483, 0x0483]
    assert len({d.serial for d in devices}) == 2 and all(len(d.serial) == 24 for d in devices)
    assert not any(d.in_use for d in devices)
    assert "opened" not in server.log()


def test_boards_are_separate_chips(stlink_server) -> None:
    server = stlink_server(boards=("left", "right"))
    left, left_id = debug_session(server, 0)
    right, right_id = debug_session(server, 1)
    write_word(left, left_id, SRAM, 0x1111_1111)
    write_word(right, right_id, SRAM, 0x2222_2222)
    assert read_word(left, left_id, SRAM) == 0x1111_1111
    assert read_word(right, right_id, SRAM) == 0x2222_2222
    unique = [read_block(c, i, 0x1FFF_7A10, 12) for c, i in ((left, left_id), (right, right_id))]
    assert unique[0] != unique[1]


def test_a_second_client_is_refused_until_the_first_closes(stlink_server) -> None:
    server = stlink_server()
    first = connect(server)
    connect_id = first.open_device(first.devices()[0])
    second = connect(server)
    device = second.devices()[0]
    assert device.in_use  # OpenOCD stops here: "the selected device is already used"
    with pytest.raises(exceptions.ProbeError, match="in use by another client"):
        second.open_device(device)
    first.close_device(connect_id)
    assert not second.devices()[0].in_use
    second.open_device(device)
    assert "is open by another client" in server.log()


def test_the_board_clock_counts_usb_commands_and_virtual_time(stlink_server) -> None:
    server = stlink_server()
    connection, connect_id = debug_session(server)
    before_ps, before_commands = connection.board_clock(0)
    for _ in range(10):
        read_word(connection, connect_id, SRAM)
    after_ps, after_commands = connection.board_clock(0)
    assert after_commands - before_commands == 10
    assert after_ps - before_ps >= 10 * 250_000_000  # 250 us per command on a V3


# --- a board keeps running without its client ---------------------------------------------------------------
def test_a_killed_client_leaves_the_erase_in_flight_to_complete(stlink_server, sim_state_dir) -> None:
    flash_with(sim_state_dir, b"\x5a")
    server = stlink_server()
    connection, connect_id = debug_session(server)
    start_erase_of_sector_1(connection, connect_id)
    assert read_word(connection, connect_id, reg.FLASH_SR) & reg.FLASH_SR_BSY
    connection._sock.close()  # the client dies: no CLOSE_DEV
    later, later_id = debug_session(server)
    assert not read_word(later, later_id, reg.FLASH_SR) & reg.FLASH_SR_BSY
    assert read_block(later, later_id, SECTOR_1, 64) == b"\xff" * 64  # sector 1 erased
    assert read_block(later, later_id, 0x0800_0000, 64) == b"\x5a" * 64  # sector 0 untouched
    assert "runs on" in server.log()


def test_sigterm_saves_the_flash_as_it_is(stlink_server, sim_state_dir) -> None:
    flash_with(sim_state_dir, b"\x5a")
    server = stlink_server()
    connection, connect_id = debug_session(server)
    start_erase_of_sector_1(connection, connect_id)
    assert server.stop() == 0  # SIGTERM while the client still holds the board and the erase runs
    flash = sim_state.load_state(sim_state_dir).flash
    assert flash[0x4000:0x8000] == b"\xff" * 0x4000 and flash[:0x4000] == b"\x5a" * 0x4000
    assert "saved" in server.log()


# --- bad input never hurts the server ------------------------------------------------------------------------
def test_an_unknown_command_is_answered_and_the_connection_closed(stlink_server) -> None:
    server = stlink_server()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"\x42\x00\x00\x00")
        assert sock.recv(4) == struct.pack("<I", TCP_CMD_NOT_AVAILABLE)
        assert connection_closed(sock)
    assert connect(server).devices()


def test_bad_ids_and_oversized_data_phases(stlink_server) -> None:
    server = stlink_server()
    bad_connect = struct.pack("<BBHI16sBBHI", 5, 0, 0, 77, b"\xf2\x36", 1, 0, 0, 8)
    assert raw_exchange(server.port, bad_connect, 12) == struct.pack("<I", TCP_BAD_PARAMETER) + bytes(8)
    bad_device = struct.pack("<BBHI", 3, 0, 0, 9)
    assert raw_exchange(server.port, bad_device, 8)[:4] == struct.pack("<I", TCP_BAD_PARAMETER)
    huge = struct.pack("<BBHI16sBBHI", 5, 0, 0, 1, b"\xf2\x08", 0, 0, 0, 1 << 30)
    assert raw_exchange(server.port, huge, 64) == struct.pack("<I", TCP_BAD_PARAMETER)  # then closed
    assert connect(server).devices()


def test_a_client_gone_in_the_middle_of_a_frame_frees_the_board(stlink_server) -> None:
    server = stlink_server()
    connection = connect(server)
    connect_id = connection.open_device(connection.devices()[0])
    header = struct.pack("<BBHI16sBBHI", 5, 0, 0, connect_id, b"\xf2\x08" + struct.pack("<IH", SRAM, 4096), 0, 0,
                         0, 4096)
    connection._sock.sendall(header + bytes(100))  # 100 of 4096 data bytes, then the client dies
    connection._sock.close()
    deadline = time.monotonic() + 10
    while connect(server).devices()[0].in_use and time.monotonic() < deadline:
        time.sleep(0.05)
    later, later_id = debug_session(server)
    write_word(later, later_id, SRAM, 0x0A0B_0C0D)
    assert read_word(later, later_id, SRAM) == 0x0A0B_0C0D
    assert "disconnected in the middle of a frame" in server.log()


def test_many_connections_at_once(stlink_server) -> None:
    server = stlink_server()
    sockets: List[socket.socket] = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    time.sleep(0.5)
    for sock in sockets:
        sock.close()
    time.sleep(0.5)
    connection, connect_id = debug_session(server)
    assert read_word(connection, connect_id, 0xE004_2000) & 0xFFF == 0x413
    assert "connections already" in server.log()


def fuzz_frames(rng: random.Random, connect_id: int) -> List[bytes]:
    """Random bytes, and valid frames with one thing mutated (command byte, ids, direction, length, block)."""
    valid = [bytes([1]), struct.pack("<BBHI", 2, 0, 0, 41), struct.pack("<BBHI", 6, 1, 0, 0),
             struct.pack("<BBHI16sBBHI", 5, 0, 0, connect_id, b"\xf2\x36\x00\xed\x00\xe0", 1, 0, 0, 8)]
    frames = [rng.randbytes(rng.randint(1, 64)) for _ in range(30)]
    for _ in range(120):
        frame = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 3)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        frames.append(bytes(frame) + rng.randbytes(rng.choice((0, 0, 8, 40))))
    return frames


def test_fuzzed_frames_and_command_blocks_leave_a_board_that_still_works(stlink_server) -> None:
    server = stlink_server()
    rng = random.Random(9)
    owner, owner_id = debug_session(server)
    for frame in fuzz_frames(rng, owner_id):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(frame)
            sock.settimeout(0.2)
            try:
                sock.recv(65536)
            except OSError:
                pass
    for _ in range(300):  # random USB command blocks through the open ST-Link (never a flash key sequence)
        cdb = bytes([rng.choice((0xF1, 0xF2, 0xF2, 0xF3, 0xF5, 0xFB, rng.randrange(256)))]) + rng.randbytes(15)
        if cdb[:2] in (b"\xf2\x21", b"\xf2\x3c", b"\xf2\x32", b"\xf2\x34", b"\xf2\x35"):
            continue  # leaving debug mode, NRST, resets and register writes are the client's to choose
        usb(owner, owner_id, *cdb, out=rng.randbytes(rng.choice((0, 4, 64))) if rng.random() < 0.3 else b"",
            read=rng.choice((0, 2, 8, 12, 64)))
    assert server.running
    write_word(owner, owner_id, SRAM + 64, 0x600D_600D)
    assert read_word(owner, owner_id, SRAM + 64) == 0x600D_600D
    owner.close_device(owner_id)
    # and the board still programs, through pyocd's ST-Link driver and f4load's stub
    image = rng.randbytes(16 * 1024)
    with Session(probe=server.uid, frequency=4_600_000) as session:
        outcome = session.program(Image.from_bytes(image))
        assert outcome.verified
        assert session.read(0x0800_0000, len(image)) == image
