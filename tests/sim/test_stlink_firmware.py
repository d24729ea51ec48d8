"""The virtual ST-Link's firmware (sim/stlink.py): its USB command set in front of the virtual STM32F407.

Most scenarios drive the firmware with pyocd's own ST-Link driver (`pyocd.probe.stlink.stlink.STLink`) through
an in-process device object - the same interface pyocd's USB device offers - so what is checked is what
pyocd's real code makes of the replies. Raw command blocks check what pyocd never sends (OpenOCD's commands,
malformed input).
"""
from __future__ import annotations

import random
import struct
from typing import List, Optional, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyocd.core import exceptions
from pyocd.probe.stlink.stlink import STLink

from f4load import registers as reg
from f4load.sim import stlink
from f4load.sim.chip import Chip
from f4load.sim.clock import PS_PER_MS, PS_PER_S
from f4load.sim.debug_port import DebugPort
from f4load.sim.faults import Faults
from f4load.sim.usb_link import USB_LINKS

SRAM = 0x2000_0000
DBGKEY = 0xA05F << 16
C_DEBUGEN, C_HALT = 1 << 0, 1 << 1
S_HALT, S_RESET_ST = 1 << 17, 1 << 25


class FirmwareDevice:
    """What pyocd's STLink needs of a device (open/close/transfer/max_packet_size/serial...), in process."""

    def __init__(self, firmware: stlink.StLinkFirmware) -> None:
        self.firmware = firmware
        self.is_open = False
        self.serial_number = "0669FF3830324B4257063021"
        self.vendor_name = "STMicroelectronics"
        self.product_name = firmware.personality.product
        self.max_packet_size = firmware.personality.max_packet

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.is_open = False

    def transfer(self, cmd: Sequence[int], writeData: Optional[Sequence[int]] = None,  # noqa: N803 - pyocd's name
                 readSize: Optional[int] = None, timeout: int = 1000) -> Optional[bytearray]:  # noqa: N803
        reply = self.firmware.command(bytes(cmd), bytes(writeData or b""), readSize or 0)
        return bytearray(reply) if readSize is not None else None


def firmware_on_chip(personality: str = "stlink-v2", faults: Faults = Faults()  # noqa: B008 - plain data
                     ) -> stlink.StLinkFirmware:
    chip = Chip(faults)
    chip.power_on()
    return stlink.StLinkFirmware(stlink.PERSONALITIES[personality], DebugPort(chip))


def connected(personality: str = "stlink-v2", faults: Faults = Faults()) -> STLink:  # noqa: B008
    """pyocd's STLink, opened and in SWD debug mode, on a fresh chip."""
    link = STLink(FirmwareDevice(firmware_on_chip(personality, faults)))
    link.open()
    link.enter_debug(STLink.Protocol.SWD)
    link.open_ap(0)
    return link


def firmware_of(link: STLink) -> stlink.StLinkFirmware:
    return link._device.firmware  # type: ignore[no-any-return]


def raw(firmware: stlink.StLinkFirmware, *cdb: int, out: bytes = b"", read: int = 0) -> bytes:
    return firmware.command(bytes(cdb), out, read)


def mem_cdb(sub: int, address: int, length: int, apsel: int = 0) -> List[int]:
    return [stlink.DEBUG_COMMAND, sub, *struct.pack("<IHB", address, length, apsel)]


# --- identity and modes ----------------------------------------------------------------------------------
# (pyocd writes a V3's version fields in its own order: V3J13S1M4B3 is ST's V3J13M4B3S1)
@pytest.mark.parametrize(("personality", "version", "hw", "jtag"),
                         [("stlink-v2", "V2J40M27", 2, 40), ("stlink-v3", "V3J13S1M4B3", 3, 13)])
def test_pyocd_reads_the_firmware_version(personality: str, version: str, hw: int, jtag: int) -> None:
    link = STLink(FirmwareDevice(firmware_on_chip(personality)))
    link.open()
    assert (link.version_str, link.hw_version, link.jtag_version) == (version, hw, jtag)
    assert link.supports_banked_dp  # V2 >= J32, V3 >= J2
    assert link.get_board_id() is None  # GET_BOARD_IDENTIFIERS answered with zeros: no Mbed board ID


def test_openocd_sees_a_v3_through_get_version_ex() -> None:
    firmware = firmware_on_chip("stlink-v3")
    version = raw(firmware, stlink.GET_VERSION, read=6)
    assert struct.unpack(">H", version[:2])[0] == 0x3000  # v=3, J0, S0: OpenOCD 0.12 then sends FB
    extended = raw(firmware, stlink.GET_VERSION_EX, read=12)
    assert extended[0] == 3 and extended[2] == 13
    assert struct.unpack("<HH", extended[8:12]) == (0x0483, 0x374F)


def test_target_voltage_is_the_supply_of_the_chip() -> None:
    link = STLink(FirmwareDevice(firmware_on_chip(faults=Faults(supply_voltage=2.5))))
    link.open()
    assert link.target_voltage == pytest.approx(2.5, abs=0.01)


def test_a_fresh_probe_is_in_dfu_mode_and_enter_swd_makes_it_debug_mode() -> None:
    firmware = firmware_on_chip()
    assert raw(firmware, stlink.GET_CURRENT_MODE, read=2)[0] == stlink.MODE_DFU
    raw(firmware, stlink.DFU_COMMAND, stlink.DFU_EXIT)
    assert raw(firmware, stlink.GET_CURRENT_MODE, read=2)[0] == stlink.MODE_MASS
    # target commands need debug mode
    assert raw(firmware, stlink.DEBUG_COMMAND, stlink.READ_IDCODES, read=12)[0] == stlink.NO_DEVICE_CONNECTED
    assert raw(firmware, stlink.DEBUG_COMMAND, stlink.ENTER, stlink.ENTER_SWD, read=2)[0] == stlink.OK
    assert raw(firmware, stlink.GET_CURRENT_MODE, read=2)[0] == stlink.MODE_DEBUG
    idcodes = raw(firmware, stlink.DEBUG_COMMAND, stlink.READ_IDCODES, read=12)
    assert idcodes[0] == stlink.OK and struct.unpack("<I", idcodes[4:8])[0] == 0x2BA0_1477


def test_enter_swd_powers_the_debug_domain_so_the_ahb_ap_works_at_once() -> None:
    firmware = firmware_on_chip()
    raw(firmware, stlink.DEBUG_COMMAND, stlink.ENTER, stlink.ENTER_SWD, read=2)
    cpuid = raw(firmware, *mem_cdb(stlink.READMEM_32BIT, reg.SCS_CPUID, 4), read=4)
    assert struct.unpack("<I", cpuid)[0] == reg.CPUID_CORTEX_M4_R0P1
    assert raw(firmware, stlink.DEBUG_COMMAND, stlink.GETLASTRWSTATUS2, read=12)[0] == stlink.OK


def test_jtag_is_not_modelled() -> None:
    firmware = firmware_on_chip()
    assert raw(firmware, stlink.DEBUG_COMMAND, stlink.ENTER, stlink.ENTER_JTAG, read=2)[0] == \
        stlink.UNKNOWN_JTAG_CHAIN


# --- memory ------------------------------------------------------------------------------------------------
def test_pyocd_moves_memory_in_32_16_and_8_bit_transfers() -> None:
    link = connected()
    data = random.Random(1).randbytes(10000)
    link.write_mem32(SRAM, list(data[:8192]), 0, 0)  # two commands: 6144 + 2048 bytes
    assert bytes(link.read_mem32(SRAM, 8192, 0, 0)) == data[:8192]
    link.write_mem16(SRAM + 2, list(data[:6]), 0, 0)
    assert bytes(link.read_mem16(SRAM + 2, 6, 0, 0)) == data[:6]
    link.write_mem8(SRAM + 1, list(data[:63]), 0, 0)
    assert bytes(link.read_mem8(SRAM + 1, 63, 0, 0)) == data[:63]
    assert firmware_of(link).port.chip.bus_read_block(SRAM + 1, 63) == data[:63]


def test_a_read_of_unmapped_memory_is_an_ap_fault_at_the_failing_address() -> None:
    link = connected()
    with pytest.raises(exceptions.TransferFaultError) as raised:
        link.read_mem32(0x2002_0000 - 8, 16, 0, 0)  # the last 8 bytes of SRAM, then nothing
    assert raised.value.fault_address == 0x2002_0000
    # pyocd cleared the sticky error (DP ABORT): the next access works
    assert len(link.read_mem32(SRAM, 4, 0, 0)) == 4


def test_openocd_hla_recovers_from_a_fault_without_touching_the_dp() -> None:
    firmware = firmware_of(connected())
    raw(firmware, *mem_cdb(stlink.READMEM_32BIT, 0x6000_0000, 4), read=4)
    status = raw(firmware, stlink.DEBUG_COMMAND, stlink.GETLASTRWSTATUS2, read=12)
    assert status[0] == stlink.SWD_AP_FAULT and struct.unpack("<I", status[4:8])[0] == 0x6000_0000
    value = raw(firmware, stlink.DEBUG_COMMAND, stlink.READDEBUGREG, *struct.pack("<I", reg.SCS_CPUID), read=8)
    assert value[0] == stlink.OK and struct.unpack("<I", value[4:8])[0] == reg.CPUID_CORTEX_M4_R0P1


@pytest.mark.parametrize(("sub", "address", "length", "status"), [
    (stlink.READMEM_32BIT, SRAM + 2, 4, stlink.ALIGNMENT_ERROR),
    (stlink.READMEM_16BIT, SRAM + 1, 2, stlink.ALIGNMENT_ERROR),
    (stlink.READMEM_32BIT, SRAM, 6148, stlink.CMD_ERROR),
    (stlink.READMEM_8BIT, SRAM, 65, stlink.CMD_ERROR),
    (stlink.READMEM_32BIT, SRAM, 4, None),
])
def test_memory_command_limits(sub: int, address: int, length: int, status: Optional[int]) -> None:
    firmware = firmware_of(connected())
    reply = raw(firmware, *mem_cdb(sub, address, length), read=length)
    assert len(reply) == length
    got = raw(firmware, stlink.DEBUG_COMMAND, stlink.GETLASTRWSTATUS2, read=12)[0]
    assert got == (status if status is not None else stlink.OK)


def test_the_v3_moves_512_bytes_per_8_bit_transfer() -> None:
    firmware = firmware_of(connected("stlink-v3"))
    raw(firmware, *mem_cdb(stlink.WRITEMEM_8BIT, SRAM + 1, 512), out=bytes(range(256)) * 2)
    assert raw(firmware, stlink.DEBUG_COMMAND, stlink.GETLASTRWSTATUS2, read=12)[0] == stlink.OK
    assert raw(firmware, *mem_cdb(stlink.READMEM_8BIT, SRAM + 1, 512), read=512) == bytes(range(256)) * 2


def test_a_write_whose_data_phase_has_the_wrong_size_writes_nothing() -> None:
    firmware = firmware_of(connected())
    raw(firmware, *mem_cdb(stlink.WRITEMEM_32BIT, SRAM, 8), out=b"\x11" * 4)
    assert raw(firmware, stlink.DEBUG_COMMAND, stlink.GETLASTRWSTATUS2, read=12)[0] == stlink.CMD_ERROR
    assert firmware.port.chip.bus_read_block(SRAM, 8) != b"\x11" * 8


def test_openocd_one_byte_read_asks_two_bytes() -> None:
    firmware = firmware_of(connected())
    firmware.port.chip.bus_write(SRAM, 1, 0x5A)
    assert raw(firmware, *mem_cdb(stlink.READMEM_8BIT, SRAM, 1), read=2) == b"\x5a\x00"


def test_no_address_increment_reads_the_same_word_again() -> None:
    firmware = firmware_of(connected())
    firmware.port.chip.bus_write(SRAM + 4, 4, 0x1234_5678)
    reply = raw(firmware, *mem_cdb(stlink.READMEM_32BIT_NO_ADDR_INC, SRAM + 4, 12), read=12)
    assert struct.unpack("<3I", reply) == (0x1234_5678,) * 3


def test_a_flash_read_during_a_sector_erase_answers_wait() -> None:
    firmware = firmware_of(connected())
    for address, value in ((reg.FLASH_KEYR, 0x4567_0123), (reg.FLASH_KEYR, 0xCDEF_89AB),
                           (reg.FLASH_CR, reg.FLASH_CR_SER | (5 << 3) | reg.FLASH_CR_STRT)):
        raw(firmware, stlink.DEBUG_COMMAND, stlink.WRITEDEBUGREG, *struct.pack("<II", address, value), read=2)
    raw(firmware, *mem_cdb(stlink.READMEM_32BIT, 0x0802_0000, 4), read=4)  # sector 5 is being erased
    status = raw(firmware, stlink.DEBUG_COMMAND, stlink.GETLASTRWSTATUS2, read=12)
    assert status[0] == stlink.SWD_AP_WAIT
    sr = raw(firmware, stlink.DEBUG_COMMAND, stlink.READDEBUGREG, *struct.pack("<I", reg.FLASH_SR), read=8)
    assert sr[0] == stlink.OK and struct.unpack("<I", sr[4:8])[0] & reg.FLASH_SR_BSY  # SR reads never stall


# --- the core, reset and DAP registers ---------------------------------------------------------------------
def test_hla_halts_and_reads_core_registers() -> None:
    firmware = firmware_of(connected())
    raw(firmware, stlink.DEBUG_COMMAND, stlink.WRITEDEBUGREG, *struct.pack("<II", reg.DHCSR,
                                                                          DBGKEY | C_DEBUGEN | C_HALT), read=2)
    dhcsr = raw(firmware, stlink.DEBUG_COMMAND, stlink.READDEBUGREG, *struct.pack("<I", reg.DHCSR), read=8)
    assert struct.unpack("<I", dhcsr[4:8])[0] & S_HALT
    assert raw(firmware, stlink.DEBUG_COMMAND, stlink.WRITEREG, 1, *struct.pack("<I", 0xCAFE_F00D), read=2)[0] \
        == stlink.OK
    value = raw(firmware, stlink.DEBUG_COMMAND, stlink.READREG, 1, read=8)
    assert value[0] == stlink.OK and struct.unpack("<I", value[4:8])[0] == 0xCAFE_F00D
    everything = raw(firmware, stlink.DEBUG_COMMAND, stlink.READALLREGS, read=88)
    assert everything[0] == stlink.OK and struct.unpack("<I", everything[8:12])[0] == 0xCAFE_F00D


def test_nrst_low_holds_the_chip_in_reset_until_released() -> None:
    link = connected()
    chip = firmware_of(link).port.chip
    link.drive_nreset(True)
    assert chip.nrst_asserted
    link.drive_nreset(False)
    assert not chip.nrst_asserted and chip.resets.get("pin") == 1
    dhcsr = int.from_bytes(bytes(link.read_mem32(reg.DHCSR, 4, 0, 0)), "little")
    assert dhcsr & S_RESET_ST


def test_resetsys_is_a_system_reset_request() -> None:
    firmware = firmware_of(connected())
    assert raw(firmware, stlink.DEBUG_COMMAND, stlink.RESETSYS, read=2)[0] == stlink.OK
    assert firmware.port.chip.resets.get("sysresetreq") == 1


def test_dap_registers_for_pyocd_and_stlink_dap() -> None:
    link = connected()
    assert link.read_dap_register(STLink.DP_PORT, 0x0) == 0x2BA0_1477
    assert link.read_dap_register(0, 0xFC) == 0x2477_0011  # AHB-AP IDR
    assert link.read_dap_register(1, 0xFC) == 0  # no AP 1
    link.write_dap_register(0, 0x04, SRAM + 16)  # TAR
    link.write_dap_register(0, 0x0C, 0xA5A5_5A5A)  # DRW
    assert link.read_mem32(SRAM + 16, 4, 0, 0) == list(struct.pack("<I", 0xA5A5_5A5A))
    with pytest.raises(exceptions.ProbeError):
        link.read_dap_register(9, 0xFC)  # beyond the firmware's APs: BAD_AP


def test_rw_misc_batches_word_reads_and_writes() -> None:
    firmware = firmware_of(connected())
    ops = bytes([stlink.RW_MISC_APNUM, stlink.RW_MISC_ADDRESS, stlink.RW_MISC_WRITE, stlink.RW_MISC_READ])
    values = struct.pack("<4I", 0, SRAM + 32, 0x0BAD_CAFE, SRAM + 32)
    raw(firmware, stlink.DEBUG_COMMAND, stlink.RW_MISC_OUT, *struct.pack("<I", 4), out=ops + values)
    reply = raw(firmware, stlink.DEBUG_COMMAND, stlink.RW_MISC_IN, read=32)
    data, statuses = struct.unpack("<4I", reply[:16]), struct.unpack("<4I", reply[16:])
    assert data[3] == 0x0BAD_CAFE and statuses == (stlink.OK,) * 4


# --- clocks and cost -----------------------------------------------------------------------------------------
def test_every_command_costs_its_usb_transaction_on_the_virtual_clock() -> None:
    firmware = firmware_of(connected())
    chip, link = firmware.port.chip, USB_LINKS["stlink-v2"]
    before = chip.clock.now_ps
    raw(firmware, stlink.GET_CURRENT_MODE, read=2)
    assert chip.clock.now_ps - before == link.latency_ps + link.usb_ps(2)
    firmware.swd_khz = 4000
    before = chip.clock.now_ps
    raw(firmware, *mem_cdb(stlink.READMEM_32BIT, SRAM, 1024), read=1024)
    swd = link.swd_ps(1 + 2 + 256 + 1, 4_000_000)  # CTRL/STAT check, CSW + TAR, 256 words, RDBUFF
    assert chip.clock.now_ps - before == link.latency_ps + link.usb_ps(1024) + swd


def test_the_swd_clock_changes_the_cost_of_a_transfer() -> None:
    link = connected()
    firmware = firmware_of(link)
    clock = firmware.port.chip.clock

    def read_cost() -> int:
        before = clock.now_ps
        link.read_mem32(SRAM, 6144, 0, 0)
        return clock.now_ps - before

    link.set_swd_frequency(4_600_000)  # pyocd's name for divisor 0, 4 MHz in OpenOCD's table and here
    assert firmware.swd_khz == 4000
    fast = read_cost()
    link.set_swd_frequency(1_000_000)
    assert firmware.swd_khz == 950
    slow = read_cost()
    swd_words = 1536
    assert slow - fast == pytest.approx(swd_words * 54 * PS_PER_S * (1 / 950_000 - 1 / 4_000_000), rel=0.01)


def test_v3_com_frequency_picks_the_fastest_offered_at_or_below_the_request() -> None:
    link = connected("stlink-v3")
    current, speeds = link.get_com_frequencies(STLink.Protocol.SWD)
    assert speeds == list(stlink.V3_SWD_KHZ) and speeds == sorted(speeds, reverse=True)
    assert link.set_com_frequency(STLink.Protocol.SWD, 10_000_000) == 8000
    assert link.set_com_frequency(STLink.Protocol.SWD, 1_000) == 5


def test_the_core_runs_while_commands_cost_time() -> None:
    firmware = firmware_of(connected())
    chip = firmware.port.chip
    code = struct.pack("<2H", 0x3001, 0xE7FD)  # adds r0, #1; b back
    raw(firmware, *mem_cdb(stlink.WRITEMEM_32BIT, SRAM, 4), out=code)
    for regsel, value in ((0, 0), (15, SRAM), (16, 1 << 24)):
        raw(firmware, stlink.DEBUG_COMMAND, stlink.WRITEDEBUGREG, *struct.pack("<II", reg.DHCSR,
                                                                              DBGKEY | C_DEBUGEN | C_HALT), read=2)
        raw(firmware, stlink.DEBUG_COMMAND, stlink.WRITEREG, regsel, *struct.pack("<I", value), read=2)
    raw(firmware, stlink.DEBUG_COMMAND, stlink.WRITEDEBUGREG, *struct.pack("<II", reg.DHCSR, DBGKEY | C_DEBUGEN),
        read=2)
    start = chip.instructions
    for _ in range(10):
        raw(firmware, stlink.GET_CURRENT_MODE, read=2)  # 10 commands, 10 ms on a full-speed link
    assert chip.instructions - start >= 10 * PS_PER_MS // 62_500 * 0.9


# --- never a crash ---------------------------------------------------------------------------------------------
def test_unknown_commands_answer_unknown_command() -> None:
    firmware = firmware_on_chip()
    assert raw(firmware, 0x42, read=4) == bytes([stlink.UNKNOWN_CMD, 0, 0, 0])
    assert raw(firmware, stlink.DEBUG_COMMAND, 0x7F, read=2)[0] == stlink.UNKNOWN_CMD
    assert raw(firmware, stlink.DEBUG_COMMAND, stlink.SET_COM_FREQ, read=8)[0] == stlink.UNKNOWN_CMD  # V2: no 61


@settings(max_examples=300, deadline=None)
@given(cdb=st.binary(min_size=0, max_size=20), out=st.binary(max_size=80), read=st.integers(0, 300),
       personality=st.sampled_from(sorted(stlink.PERSONALITIES)))
def test_any_command_block_gets_exactly_the_bytes_asked_for(cdb: bytes, out: bytes, read: int,
                                                            personality: str) -> None:
    firmware = firmware_on_chip(personality)
    raw(firmware, stlink.DEBUG_COMMAND, stlink.ENTER, stlink.ENTER_SWD, read=2)
    for head in (cdb, bytes([stlink.DEBUG_COMMAND]) + cdb[1:]):
        assert len(firmware.command(head, out, read)) == read
