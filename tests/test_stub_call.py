"""Waiting for a stub entry point to return: a lockup, a reset or a lost link ends the wait at once, each with its
own error, instead of the host waiting out the call timeout (94 s) for a halt that never comes."""
from __future__ import annotations

import struct
from typing import Any, List

import pytest

from f4load import protocol, registers
from f4load.sim import faults
from f4load.stub_call import CoreLockupError, LinkLostError, StubCall, TargetResetError
from f4load.stub_image import StubImage

STUB = StubImage.shipped()
UDF = 0xDE00  # a permanently undefined Thumb instruction (ARMv7-M A7.7.194): UsageFault, escalated to HardFault


def _words(data: bytes) -> List[int]:
    data = data + b"\x00" * (-len(data) % 4)
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def _loaded(target: Any, broken_init: bool = False) -> StubCall:
    """The stub in RAM with its halt word, ready for `call` (Init's first instruction a UDF if `broken_init`);
    the power-on reset flags cleared."""
    call = StubCall(target, STUB, protocol.const("F4LOAD_RAM_BASE"), call_timeout_s=94.0)
    target.halt()
    target.write32(registers.RCC_CSR, registers.RCC_CSR_RMVF)  # as the stream does: later flags are new resets
    image = bytearray(STUB.image)
    if broken_init:
        at = STUB.entry_address(0, "Init") & ~1
        image[at:at + 2] = struct.pack("<H", UDF)
    target.write_memory_block32(call.layout.halt_address, [protocol.const("F4LOAD_HALT_WORD")])
    target.write_memory_block32(call.layout.load_address, _words(bytes(image)))
    return call


def test_a_stub_that_locks_up_the_core_in_init_ends_the_wait_at_once(sim_session: Any) -> None:
    # Blank flash: the HardFault vector reads 0xFFFFFFFF, so the UsageFault escalates into a lockup (B1.5.15).
    clock = sim_session.probe.clock
    call = _loaded(sim_session.target, broken_init=True)
    start = clock.seconds
    with pytest.raises(CoreLockupError) as caught:
        call.call("Init", 0x0800_0000, 0, 2)
    assert clock.seconds - start < 0.01  # not the 94 s call timeout
    assert "locked up while it ran the stub's Init" in str(caught.value)


def test_a_reset_while_an_entry_point_runs_ends_the_wait_with_a_reset_error(open_session: Any,
                                                                           sim_state_dir: Any) -> None:
    faults.inject(str(sim_state_dir), "bsy-stuck")  # EraseSector then waits for BSY: long enough to be reset
    session = open_session("ideal")
    call = _loaded(session.target)
    assert call.call("Init", 0x0800_0000, 0, 2) == 0
    call.start_call("EraseSector", (0x0800_0000,))  # through Call: block, PC, resume
    session.probe.chip.reset("pin")
    with pytest.raises(TargetResetError) as caught:
        call._wait_halted("EraseSector", 94.0)
    assert not isinstance(caught.value, CoreLockupError) and caught.value.reset_seen


def test_a_link_lost_while_an_entry_point_runs_ends_the_wait_with_a_link_error(open_session: Any,
                                                                             sim_state_dir: Any) -> None:
    faults.inject(str(sim_state_dir), "bsy-stuck")
    session = open_session("ideal")
    call = _loaded(session.target)
    assert call.call("Init", 0x0800_0000, 0, 2) == 0
    call.start_call("EraseSector", (0x0800_0000,))
    session.probe._disconnect_after = session.probe.commands + 3
    with pytest.raises(LinkLostError):
        call._wait_halted("EraseSector", 94.0)
