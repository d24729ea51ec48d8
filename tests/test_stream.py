"""Streaming: the stub's Stream() entry point keeps running while the host feeds it, through unmodified pyocd
on the virtual STM32F407 (f4sim probe). Function on the ideal link; one measurement on the stlink-v2 link."""
from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any, Sequence, Tuple

import pytest
from pyocd.core import exceptions as pyocd_exceptions

from f4load import protocol, registers
from f4load.crc import stm32_crc32
from f4load.part import FLASH_START, KB, sectors_for
from f4load.sim import faults
from f4load.sim.clock import PS_PER_MS
from f4load.stream import (
    COMMAND_SIZE,
    OFFSET_SLOTS,
    Crc,
    EraseSector,
    LinkLostError,
    Program,
    StreamCommandError,
    StubRunner,
    TargetResetError,
    run_stream,
)
from f4load.stub_image import StubImage

STUB = StubImage.shipped()
SECTORS = sectors_for(512 * KB)
BUFFER = protocol.const("F4LOAD_BUFFER_SIZE")
FLOOR_512K_S = 6.65  # erase sectors 0-7 + program 512 KB at x32, DS8626 typical (the digest)


def _random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _read_flash(session: Any, address: int, size: int) -> bytes:
    return bytes(session.target.read_memory_block8(address, size))


def _open_with_faults(open_session: Any, state_dir: Path, spec: str, link: str = "ideal") -> Any:
    faults.inject(str(state_dir), spec)
    return open_session(link)


def test_random_data_across_sectors_reads_back_exactly(sim_session):
    # Starts and ends off word alignment and crosses the sector 0/1 boundary and several buffers.
    start = SECTORS[0].start + 0x3001
    data = _random(SECTORS[1].end - start - 0x1003, seed=1)
    run_stream(sim_session.target, STUB, [EraseSector(0), EraseSector(1), Program(start, data)])
    assert _read_flash(sim_session, start, len(data)) == data
    assert _read_flash(sim_session, FLASH_START, start - FLASH_START) == b"\xff" * (start - FLASH_START)
    assert _read_flash(sim_session, start + len(data), 0x1003) == b"\xff" * 0x1003


def test_report_counts_commands_bytes_and_virtual_time(sim_session):
    data = _random(3 * protocol.const("F4LOAD_BUFFER_SIZE") + 100, seed=2)
    report = run_stream(sim_session.target, STUB, [EraseSector(0), Program(FLASH_START, data)])
    assert report.sectors_erased == 1
    assert report.bytes_programmed == len(data)
    assert report.commands == 1 + 4 + 1  # erase, four buffers, STOP
    assert report.virtual_seconds is not None and report.virtual_seconds > 0.25  # one 16 KB erase, typical


def test_crc_command_matches_the_host_crc(sim_session):
    data = _random(20 * KB, seed=3)
    report = run_stream(sim_session.target, STUB, [
        EraseSector(0), EraseSector(1), Program(FLASH_START, data),
        Crc(FLASH_START, len(data)), Crc(FLASH_START + 4, 1000), Crc(SECTORS[1].start + 8 * KB, 8 * KB)])
    assert [(c.address, c.size) for c in report.crcs] == [
        (FLASH_START, len(data)), (FLASH_START + 4, 1000), (SECTORS[1].start + 8 * KB, 8 * KB)]
    assert report.crcs[0].value == stm32_crc32(data)
    assert report.crcs[1].value == stm32_crc32(data[4:1004])
    assert report.crcs[2].value == stm32_crc32(b"\xff" * 8 * KB)  # erased, never programmed


def test_more_commands_than_slots_wrap_around_the_ring(sim_session):
    data = _random(16 * KB, seed=9)
    crcs = [Crc(FLASH_START + i * 256, 256) for i in range(40)]  # 40 + erase + program + STOP > 3 x 16 slots
    report = run_stream(sim_session.target, STUB, [EraseSector(0), Program(FLASH_START, data), *crcs])
    assert [c.value for c in report.crcs] == [stm32_crc32(data[i * 256:(i + 1) * 256]) for i in range(40)]
    assert report.commands == 1 + 2 + 40 + 1


def test_x16_parallelism_programs_the_same_bytes(sim_session):
    data = _random(5000, seed=4)
    run_stream(sim_session.target, STUB, [EraseSector(2), Program(SECTORS[2].start + 2, data)],
               psize=protocol.PSIZE_X16)
    assert _read_flash(sim_session, SECTORS[2].start + 2, len(data)) == data


def test_flash_is_locked_and_core_halted_after_the_stream(sim_session):
    run_stream(sim_session.target, STUB, [EraseSector(3)])
    target = sim_session.target
    assert target.is_halted()
    assert target.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK


def test_write_protected_sector_stops_the_stream_with_its_code_and_sector(open_session, sim_state_dir):
    session = _open_with_faults(open_session, sim_state_dir, "wrp=1")
    data = _random(4 * KB, seed=5)
    with pytest.raises(StreamCommandError) as caught:
        run_stream(session.target, STUB, [EraseSector(0), EraseSector(1), EraseSector(2),
                                          Program(SECTORS[2].start, data)])
    error = caught.value
    assert error.kind == "FLASH_ERROR"
    assert error.operation == "EraseSector"
    assert (error.sector, error.sr_names, error.address) == (1, ["WRPERR"], SECTORS[1].start)
    assert error.request == EraseSector(1)
    assert error.record is not None and error.record.sr & registers.FLASH_SR_WRPERR
    assert "sector 1" in str(error) and "WRPERR" in str(error)
    # Nothing after the failed command ran, and FLASH_CR was locked again.
    assert _read_flash(session, SECTORS[2].start, len(data)) == b"\xff" * len(data)
    assert session.target.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK


def test_program_over_unerased_flash_is_reported_with_the_address(sim_session):
    run_stream(sim_session.target, STUB, [EraseSector(0), Program(FLASH_START, b"\x00" * 64)])
    with pytest.raises(StreamCommandError) as caught:
        run_stream(sim_session.target, STUB, [Program(FLASH_START + 32, b"\x5a" * 32)])
    error = caught.value
    assert (error.kind, error.operation, error.sector) == ("VERIFY_MISMATCH", "ProgramPage", 0)
    assert error.address == FLASH_START + 32
    assert error.request == Program(FLASH_START + 32, b"\x5a" * 32)


def test_reset_during_an_erase_is_reported_as_a_reset(open_session, sim_state_dir):
    session = _open_with_faults(open_session, sim_state_dir, "reset=erase:1:middle:brownout")
    with pytest.raises(TargetResetError) as caught:
        run_stream(session.target, STUB, [EraseSector(0), EraseSector(1), Program(FLASH_START, b"\x11" * 64)])
    error = caught.value
    assert error.request == EraseSector(0)
    assert error.reset_flags & registers.RCC_CSR_BORRSTF
    assert "reset" in str(error)


def test_watchdog_reset_during_programming_is_reported_as_a_reset(open_session, sim_state_dir):
    session = _open_with_faults(open_session, sim_state_dir, "reset=program:300:middle:iwdg")
    with pytest.raises(TargetResetError) as caught:
        run_stream(session.target, STUB, [EraseSector(0), Program(FLASH_START, _random(4 * KB, seed=6))])
    assert isinstance(caught.value.request, Program)
    assert caught.value.reset_flags & registers.RCC_CSR_IWDGRSTF


def test_probe_disconnect_mid_stream_is_reported_as_such(open_session, sim_state_dir):
    session = _open_with_faults(open_session, sim_state_dir, "disconnect=400")
    with pytest.raises(LinkLostError) as caught:
        run_stream(session.target, STUB, [EraseSector(0), EraseSector(1), Program(FLASH_START, b"\x22" * 64)])
    assert caught.value.request is not None  # it happened during the stream, not while loading


def test_application_watchdog_is_kept_quiet_during_a_long_erase(open_session, sim_state_dir):
    session = _open_with_faults(open_session, sim_state_dir, "iwdg=5ms")
    data = _random(2 * KB, seed=7)
    report = run_stream(session.target, STUB, [EraseSector(4), Program(SECTORS[4].start, data)])
    assert report.sectors_erased == 1  # a 64 KB erase takes 550 ms, the application's IWDG 5 ms
    assert _read_flash(session, SECTORS[4].start, len(data)) == data


def test_512k_erase_program_verify_over_stlink_v2(open_session, capsys):
    session = open_session("stlink-v2", frequency=4_000_000)  # the SWD clock f4load asks for (session.py)
    data = _random(512 * KB, seed=8)
    operations = [EraseSector(s.index) for s in SECTORS] + [Program(FLASH_START, data), Crc(FLASH_START, len(data))]
    report = run_stream(session.target, STUB, operations)
    assert report.crcs[0].value == stm32_crc32(data)
    assert report.virtual_seconds is not None
    ratio = report.virtual_seconds / FLOOR_512K_S
    with capsys.disabled():
        print(f"\nf4load stream, 512 KB erase+program+CRC verify over stlink-v2: {report.virtual_seconds:.3f} s "
              f"virtual, {ratio:.3f} x the {FLOOR_512K_S} s floor ({report})")
    assert ratio > 1.0  # sanity: nothing beats the flash's own erase and program times


def test_sector_past_the_end_of_a_512k_part_is_refused_before_anything_is_erased(sim_session):
    with pytest.raises(StreamCommandError) as caught:
        run_stream(sim_session.target, STUB, [EraseSector(8)])
    assert (caught.value.kind, caught.value.sector, caught.value.request) == ("BEYOND_END", 8, EraseSector(8))


class _BareStub:
    """The stub alone on a bare virtual chip (no pyocd, no host driver): load, call entry points the CMSIS way,
    start Stream and let time pass, so that the stub side of the protocol can be checked by itself."""

    def __init__(self, chip_faults: str = "") -> None:
        from f4load.sim.chip import Chip

        self.chip = chip = Chip(faults.parse_fault_spec(chip_faults))
        chip.power_on()
        chip.debugen = True
        chip.halt(0)
        self.layout = STUB.layout()
        chip.bus_write_block(self.layout.halt_address, protocol.const("F4LOAD_HALT_WORD").to_bytes(4, "little"))
        chip.bus_write_block(self.layout.load_address, STUB.image)

    def start(self, name: str, *args: int) -> None:
        from f4load.sim.chip import REGSEL_LR, REGSEL_PC, REGSEL_SP, REGSEL_XPSR

        chip = self.chip
        for regsel, value in enumerate(args):
            chip.write_core_register(regsel, value)
        chip.write_core_register(REGSEL_SP, self.layout.stack_top)
        chip.write_core_register(REGSEL_LR, self.layout.halt_address | 1)
        chip.write_core_register(REGSEL_XPSR, 1 << 24)
        chip.write_core_register(REGSEL_PC, STUB.entry_address(self.layout.load_address, name))
        chip.resume()

    def call(self, name: str, *args: int) -> int:
        from f4load.sim.clock import PS_PER_MS

        self.start(name, *args)
        assert self.chip.run_until_halted(100 * PS_PER_MS)
        return self.chip.read_core_register(0)

    def start_stream(self, queue: bytes) -> None:
        self.chip.bus_write_block(self.layout.queue_address, queue)
        self.start("Stream", self.layout.queue_address, self.layout.buffers[0], len(self.layout.buffers))

    def queue_word(self, offset: int) -> int:
        return int.from_bytes(self.chip.bus_read_block(self.layout.queue_address + offset, 4), "little")

    @staticmethod
    def queue(queued: int = 0, slots: Sequence[Tuple[int, int, int]] = ()) -> bytearray:
        """A queue image: magic, `queued`, and (seq, op, address) slots."""
        from f4load.stream import OFFSET_QUEUED, QUEUE_SIZE

        queue = bytearray(QUEUE_SIZE)
        queue[0:4] = protocol.const("F4LOAD_QUEUE_MAGIC").to_bytes(4, "little")
        queue[OFFSET_QUEUED:OFFSET_QUEUED + 4] = queued.to_bytes(4, "little")
        for seq, op, address in slots:
            at = _slot_offset(seq)
            queue[at:at + COMMAND_SIZE] = _slot(seq, op, address)
        return queue


def _slot_offset(seq: int) -> int:
    return OFFSET_SLOTS + (seq % protocol.const("F4LOAD_QUEUE_SLOTS")) * COMMAND_SIZE


def _slot(seq: int, op: int, address: int) -> bytes:
    """A whole slot as the host writes it: op, address, size 0, buffer 0, result and value 0, seq last."""
    return struct.pack("<7I", op, address, 0, 0, 0, 0, seq)


def test_a_slot_left_from_before_is_never_run_as_a_published_command():
    """RAM from an earlier batch or an application: slot 1 holds an erase of sector 0 numbered 1, but the queue
    says no command came with it (queued = 0). Stream clears the seq of such slots before it first sets its
    status, so it waits instead of erasing; a command the host then publishes runs."""
    from f4load.stream import CMD_ERASE_SECTOR, CMD_STOP, OFFSET_SEQ, OFFSET_STATUS, OFFSET_STUB_SEQ

    stub = _BareStub()
    assert stub.call("Init", FLASH_START, 0, 2) == 0
    stub.chip.load(FLASH_START, b"\x00" * 16)  # sector 0 is not blank: an erase would be visible
    stub.start_stream(bytes(stub.queue(queued=0, slots=[(1, CMD_ERASE_SECTOR, FLASH_START)])))
    stub.chip.advance(10 * PS_PER_MS)
    assert not stub.chip.halted
    assert stub.queue_word(OFFSET_STATUS) == protocol.const("F4LOAD_STATUS_WAITING")
    assert stub.queue_word(_slot_offset(1) + OFFSET_SEQ) == 0
    assert stub.chip.bus_read_block(FLASH_START, 16) == b"\x00" * 16  # not erased

    stub.chip.bus_write_block(stub.layout.queue_address + _slot_offset(1), _slot(1, CMD_STOP, 0))
    assert stub.chip.run_until_halted(10 * PS_PER_MS)
    assert stub.chip.read_core_register(0) == 0
    assert stub.queue_word(OFFSET_STUB_SEQ) == 1
    assert stub.chip.bus_read_block(FLASH_START, 16) == b"\x00" * 16


def test_idle_stub_waits_through_the_application_watchdog_and_answers_later():
    """An empty queue for far longer than the application's 5 ms IWDG period: the stub waits (status WAITING)
    without a watchdog reset (Init stretched the IWDG, the idle loop refreshes it) and still runs a command
    published 100 ms later (its slot, written in one transfer with the seq word last)."""
    from f4load.stream import CMD_STOP, OFFSET_STATUS, OFFSET_STUB_SEQ

    stub = _BareStub("iwdg=5ms")
    assert stub.call("Init", FLASH_START, 0, 2) == 0
    stub.start_stream(bytes(stub.queue()))
    stub.chip.advance(100 * PS_PER_MS)
    assert not stub.chip.halted and not stub.chip.resets.get("iwdg")
    assert stub.queue_word(OFFSET_STATUS) == protocol.const("F4LOAD_STATUS_WAITING")

    stub.chip.bus_write_block(stub.layout.queue_address + _slot_offset(1), _slot(1, CMD_STOP, 0))
    assert stub.chip.run_until_halted(10 * PS_PER_MS)
    assert stub.chip.read_core_register(0) == 0
    assert stub.queue_word(OFFSET_STUB_SEQ) == 1
    assert stub.queue_word(OFFSET_STATUS) == protocol.const("F4LOAD_STATUS_STOPPED")
    assert not stub.chip.resets.get("iwdg")


# --- progress, several batches on one loaded stub, the target changing under the host --------------------

def test_progress_reports_each_erase_program_buffer_and_crc_as_it_completes(sim_session):
    data = _random(2 * BUFFER + 10, seed=11)
    seen = []
    run_stream(sim_session.target, STUB, [EraseSector(0), Program(FLASH_START, data), Crc(FLASH_START, 64)],
               progress=lambda operation, nbytes: seen.append((operation, nbytes)))
    program = Program(FLASH_START, data)
    assert seen == [(EraseSector(0), 16 * KB), (program, BUFFER), (program, BUFFER), (program, 10),
                    (Crc(FLASH_START, 64), 64)]


def test_stub_runner_keeps_the_stub_loaded_across_batches(sim_session):
    target = sim_session.target
    data = _random(6 * KB, seed=12)
    with StubRunner(target, STUB) as runner:
        before = runner.run([Crc(SECTORS[1].start, SECTORS[1].size)])
        # Between batches: core halted at the halt word, FLASH_CR locked again (each batch is one Run: Init,
        # Stream, UnInit), the target free for the host's own reads.
        assert target.is_halted() and target.read_core_register("pc") == runner.layout.halt_address
        assert target.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK
        assert _read_flash(sim_session, SECTORS[1].start, 16) == b"\xff" * 16
        after = runner.run([EraseSector(1), Program(SECTORS[1].start, data), Crc(SECTORS[1].start, len(data))])
    assert before.crcs[0].value == stm32_crc32(b"\xff" * SECTORS[1].size)
    assert after.crcs[0].value == stm32_crc32(data)
    assert (after.sectors_erased, after.bytes_programmed) == (1, len(data))
    assert target.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK  # UnInit at the end of the batch


def test_stub_runner_loads_the_stub_once(open_session):
    session = open_session()
    probe = session.probe
    operations = [Crc(FLASH_START, 4 * KB)]
    start = probe.bytes_written
    run_stream(session.target, STUB, operations)
    run_stream(session.target, STUB, operations)
    twice = probe.bytes_written - start
    start = probe.bytes_written
    with StubRunner(session.target, STUB) as runner:
        runner.run(operations)
        runner.run(operations)
    once = probe.bytes_written - start
    # The second batch of the runner writes Run's call block again, not the image it is part of.
    assert twice - once >= len(STUB.image) - protocol.ffi.sizeof("struct f4load_call")


def test_a_reset_between_batches_is_reported_before_the_next_batch_runs(sim_session):
    target = sim_session.target
    with pytest.raises(TargetResetError) as caught:
        with StubRunner(target, STUB) as runner:
            runner.run([Crc(FLASH_START, 1024)])
            sim_session.probe.chip.reset("pin")  # the NRST button, while the host was planning
            runner.run([EraseSector(0)])
    assert caught.value.reset_flags & registers.RCC_CSR_PINRSTF
    assert caught.value.request == EraseSector(0)


class _ResetsBeforeStream:
    """The pyocd target, except that the chip browns out just before the host sets up the call of Run (Init,
    Stream, UnInit): the host's next step finds the core running the application (pyocd: "core is not
    halted")."""

    def __init__(self, target: Any, chip: Any) -> None:
        self._target, self._chip, self._calls = target, chip, 0

    def write_core_registers_raw(self, names: Sequence[str], values: Sequence[int]) -> None:
        self._calls += 1
        if self._calls == 1:  # the call of Run
            self._chip.reset("brownout")
            self._chip.advance(PS_PER_MS)
        self._target.write_core_registers_raw(names, values)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def test_pyocd_refusing_a_step_after_a_reset_is_reported_as_the_reset(sim_session):
    target = _ResetsBeforeStream(sim_session.target, sim_session.probe.chip)
    with pytest.raises(TargetResetError) as caught:
        run_stream(target, STUB, [EraseSector(0)])
    assert caught.value.reset_flags & registers.RCC_CSR_BORRSTF
    assert isinstance(caught.value.__cause__, pyocd_exceptions.Error)  # what pyocd raised, kept as the cause


# An application in flash that refreshes the IWDG forever: vector table (SP, reset handler), then
#   0x08000008: ldr r0, [pc, #4]; ldr r1, [pc, #8]; loop: str r1, [r0]; b loop; .word IWDG_KR; .word 0xAAAA
WATCHDOG_APP = struct.pack("<IIHHHHII", 0x2002_0000, FLASH_START + 8 + 1, 0x4801, 0x4902, 0x6001, 0xE7FD,
                           registers.IWDG_KR, registers.IWDG_KEY_RELOAD)


def test_attached_target_with_a_2ms_watchdog_is_not_reset_between_halt_and_stub(open_session, sim_state_dir):
    # The application runs with a 2 ms IWDG and refreshes it; the debugger finds it running with
    # DBG_IWDG_STOP clear. The host must freeze the IWDG before it halts the core: a probe command costs
    # about 1 ms, and loading the stub and calling Init take several.
    from f4load.sim import state as sim_state

    chip_state = sim_state.reset_state(sim_state_dir)
    chip_state.flash[:len(WATCHDOG_APP)] = WATCHDOG_APP
    sim_state.save_state(chip_state, sim_state_dir)
    session = _open_with_faults(open_session, sim_state_dir, "iwdg=2ms", link="stlink-v2")
    target, chip = session.target, session.probe.chip
    target.write32(registers.DBGMCU_APB1_FZ, 0)
    target.write32(registers.IWDG_KR, registers.IWDG_KEY_RELOAD)
    target.resume()
    chip.advance(10 * PS_PER_MS)
    target.write32(registers.RCC_CSR, registers.RCC_CSR_RMVF)
    chip.advance(50 * PS_PER_MS)
    assert not target.read32(registers.RCC_CSR) & registers.RCC_CSR_IWDGRSTF  # it keeps its watchdog quiet
    resets = chip.resets.get("iwdg", 0)
    report = run_stream(target, STUB, [EraseSector(1)])
    assert report.sectors_erased == 1 and report.reset_flags_before == 0
    assert chip.resets.get("iwdg", 0) == resets


# --- the host's way out: the stub's last two stores, a broken stream ------------------------------------

class _PollLandsBetweenStopAndStopped:
    """The pyocd target, except that one poll lands in the gap at the end of Stream: the stub has stored
    stub_seq = STOP but not yet status = STOPPED (in between: the error record, a dmb). The queue words are put
    in that state in the chip's RAM for that one poll, then the stub's last store is put back."""

    def __init__(self, target: Any, chip: Any) -> None:
        from f4load.stream import OFFSET_STATUS, OFFSET_STUB_SEQ

        self._target, self._chip = target, chip
        queue = STUB.layout().queue_address
        self._poll, self._status = queue + OFFSET_STUB_SEQ, queue + OFFSET_STATUS
        self.landed = False
        self.gap: Sequence[int] = ()  # (stub_seq, status) as that poll saw them

    def read_memory_block32(self, address: int, count: int) -> Any:
        stopped = protocol.const("F4LOAD_STATUS_STOPPED")
        words = self._target.read_memory_block32(address, count)
        if address == self._poll and not self.landed and words[1] == stopped:
            # The stub has finished (the core is halted): the same poll again, in the gap.
            self.landed = True
            self._chip.bus_write_block(self._status, struct.pack("<I", protocol.const("F4LOAD_STATUS_WORKING")))
            words = self._target.read_memory_block32(address, count)
            self.gap = list(words)
            self._chip.bus_write_block(self._status, struct.pack("<I", stopped))
        return words

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def test_a_poll_between_the_stubs_last_two_stores_still_ends_the_stream(open_session):
    session = open_session("stlink-v2")  # every probe command costs time: a host that keeps polling stalls
    target = _PollLandsBetweenStopAndStopped(session.target, session.probe.chip)
    report = run_stream(target, STUB, [Crc(FLASH_START, 64)], stall_timeout_s=0.05)
    # CRC, STOP: 2 (the poll also reads the CRC unit's known answer beside them)
    assert target.landed and target.gap[:2] == [2, protocol.const("F4LOAD_STATUS_WORKING")]
    assert report.crcs[0].value == stm32_crc32(b"\xff" * 64)
    assert session.target.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK


def test_ctrl_c_mid_stream_halts_the_core_and_locks_the_flash_at_once(sim_session):
    # Ctrl-C while the stub computes CRCs (the flash idle), with an erase of sector 4 still to come.
    target, clock, chip = sim_session.target, sim_session.probe.clock, sim_session.probe.chip
    chip.load(SECTORS[4].start, b"\x00" * 16)
    interrupted_at = []

    def ctrl_c(operation: Any, nbytes: int) -> None:
        interrupted_at.append(clock.seconds)
        raise KeyboardInterrupt

    operations = [Crc(SECTORS[1].start, SECTORS[1].size)] * 20 + [EraseSector(4)]
    with pytest.raises(KeyboardInterrupt):
        with StubRunner(target, STUB) as runner:
            runner.run(operations, progress=ctrl_c)
    assert clock.seconds - interrupted_at[0] < 0.001  # no wait for a running core to return
    assert target.is_halted()
    assert target.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK  # Init had unlocked it
    assert _read_flash(sim_session, SECTORS[4].start, 16) == b"\x00" * 16  # the erase never ran


def test_a_stalled_stream_halts_the_core_and_says_the_flash_is_still_busy(open_session, sim_state_dir):
    from f4load.stream import StreamError

    session = _open_with_faults(open_session, sim_state_dir, "bsy-stuck")
    target = session.target
    with pytest.raises(StreamError) as caught:
        run_stream(target, STUB, [EraseSector(0)], stall_timeout_s=0.2)  # the stub would wait 8 s for BSY
    message = str(caught.value)
    assert "no progress for 0.2 s" in message
    assert "FLASH_CR was left unlocked: FLASH_SR.BSY is still set" in message
    assert target.is_halted()
