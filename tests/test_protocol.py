"""The stub protocol as the host reads it: one C header through cffi, result codes in words."""
from __future__ import annotations

import struct

import pytest

from f4load import protocol
from f4load.protocol import ErrorRecord, ResultCode, const, describe_result, ffi


def code(kind: str, op: str, sector: int = 15, sr: int = 0, detail: int = 0, stale: bool = False) -> int:
    """Build a result code the way the stub's report.c does."""
    return ((const(f"F4LOAD_KIND_{kind}") << const("F4LOAD_KIND_SHIFT"))
            | (const(f"F4LOAD_OP_{op}") << const("F4LOAD_OP_SHIFT"))
            | (sector << const("F4LOAD_SECTOR_SHIFT"))
            | (const("F4LOAD_STALE") if stale else 0)
            | (detail << const("F4LOAD_DETAIL_SHIFT")) | sr)


WRPERR, OPERR, PGSERR, PGPERR = 1 << 4, 1 << 1, 1 << 7, 1 << 6


def test_header_without_guards_is_what_cdef_reads():
    lines = protocol.cdef_text(protocol.header_text()).splitlines()
    directives = {line.split()[0] for line in lines if line.startswith("#")}
    assert directives == {"#define"}
    assert "#define F4LOAD_PROTOCOL_H" not in lines
    text = "\n".join(lines)
    assert "struct f4load_error" in text


def test_result_code_fields_do_not_overlap():
    masks = [const("F4LOAD_KIND_MASK"), const("F4LOAD_OP_MASK"), const("F4LOAD_SECTOR_MASK"), const("F4LOAD_STALE"),
             const("F4LOAD_DETAIL_MASK"), const("F4LOAD_SR_MASK")]
    total = 0
    for mask in masks:
        assert total & mask == 0
        total |= mask
    assert total == 0xFFFF_FFFF


def test_sr_byte_of_a_result_uses_the_flash_sr_bit_positions():
    from f4load import registers

    assert {bit for bit in protocol.SR_BITS} == {registers.FLASH_SR_OPERR, registers.FLASH_SR_WRPERR,
                                                 registers.FLASH_SR_PGAERR, registers.FLASH_SR_PGPERR,
                                                 registers.FLASH_SR_PGSERR}
    assert registers.FLASH_SR_ERRORS & ~const("F4LOAD_SR_MASK") == 0


def test_error_record_is_eleven_words_in_header_order():
    assert ffi.sizeof("struct f4load_error") == 44 == ErrorRecord.SIZE
    assert ffi.offsetof("struct f4load_error", "address") == 4
    assert ffi.offsetof("struct f4load_error", "sr") == 8
    assert ffi.offsetof("struct f4load_error", "failures") == 40


def test_queue_has_the_declared_number_of_slots_and_ends_with_an_error_record():
    fields = dict(ffi.typeof("struct f4load_queue").fields)
    slots = fields["slots"].type.length
    assert slots == const("F4LOAD_QUEUE_SLOTS")
    # magic, queued, stub_seq, status, crc_check, crc_seq, crc_value, 4 check words; the slots; the error record
    assert fields["slots"].offset == 44 and fields["error"].offset == 44 + slots * ffi.sizeof("struct f4load_command")
    assert ffi.sizeof("struct f4load_queue") == fields["error"].offset + 44


def test_error_record_reads_from_stub_memory():
    raw = struct.pack("<11I", code("FLASH_ERROR", "ERASE_SECTOR", 5, WRPERR), 0x0802_0000, 0x10, 0x0200_002A,
                      0, 0, 3, PGSERR, 0, 512 * 1024, 1)
    record = ErrorRecord.from_bytes(raw)
    assert record.address == 0x0802_0000
    assert record.stale_sr == PGSERR
    assert record.flash_size == 512 * 1024


def test_a_code_decodes_into_its_fields():
    r = ResultCode.decode(code("FLASH_ERROR", "PROGRAM", 7, OPERR, stale=True))
    assert (r.kind, r.op, r.sector, r.sr_bits, r.stale) == (1, 5, 7, OPERR, True)
    assert ResultCode.decode(code("FLASH_ERROR", "ERASE_CHIP", sr=WRPERR)).sector is None


def test_example_code_in_the_header_reads_as_documented():
    assert code("FLASH_ERROR", "ERASE_SECTOR", 5, WRPERR) == 0x0135_0010


# --- describe_result --------------------------------------------------------------------------------------

def test_success_is_success():
    assert describe_result(0) == "success"


def test_write_protected_sector_names_the_sector_the_bit_and_the_option_bytes():
    text = describe_result(code("FLASH_ERROR", "ERASE_SECTOR", 5, WRPERR))
    assert text.startswith("EraseSector failed on sector 5 (0x08020000, 128 KB)")
    assert "FLASH_SR.WRPERR: write protection error" in text
    assert "nWRP" in text and "RDP" in text


def test_operr_during_programming_points_at_the_supply_and_parallelism():
    text = describe_result(code("FLASH_ERROR", "PROGRAM", 0, OPERR))
    assert "ProgramPage failed on sector 0" in text
    assert "FLASH_SR.OPERR" in text
    assert "2.7-3.6 V" in text


def test_several_sr_bits_are_each_named():
    text = describe_result(code("FLASH_ERROR", "PROGRAM", 2, PGPERR | PGSERR))
    assert "FLASH_SR.PGPERR" in text and "FLASH_SR.PGSERR" in text
    assert "WRPERR" not in text


def test_locked_after_the_key_sequence_says_wrong_key_since_reset():
    text = describe_result(code("LOCKED", "INIT"))
    assert text.startswith("Init failed: FLASH_CR stayed locked")
    assert "wrong key" in text and "next reset" in text


def test_bsy_timeout_with_its_record_says_how_long_the_stub_waited():
    c = code("BSY_TIMEOUT", "ERASE_SECTOR", 11, 0)
    record = ErrorRecord(result=c, address=0x080E_0000, sr=0x0001_0000, cr=0x0201_005A, expected=0, actual=0,
                         waited_ms=4000, stale_sr=0, cfsr=0, flash_size=1024 * 1024, failures=1)
    text = record.describe()
    assert "sector 11" in text and "BSY stayed set" in text
    assert "waited 4000 ms" in text and "0x080e0000" in text


def test_stale_flags_are_reported_with_their_names():
    c = code("FLASH_ERROR", "ERASE_SECTOR", 1, WRPERR, stale=True)
    record = ErrorRecord(result=c, address=0x0800_4000, sr=0x10, cr=0, expected=0, actual=0, waited_ms=0,
                         stale_sr=PGSERR, cfsr=0, flash_size=512 * 1024, failures=1)
    assert "note: PGSERR were already set before this operation" in describe_result(c, record)


def test_beyond_end_of_a_512kb_part():
    text = describe_result(code("BEYOND_END", "ERASE_SECTOR", 8))
    assert "past the end of this part's flash" in text and "sectors 0-7" in text


def test_bad_argument_explains_which_rule():
    text = describe_result(code("BAD_ARGUMENT", "ERASE_SECTOR", 4, detail=const("F4LOAD_ARG_NOT_SECTOR_START")))
    assert "first address of a sector" in text


def test_every_bad_argument_detail_has_words():
    details = {v for k, v in protocol.CONSTANTS.items() if k.startswith("F4LOAD_ARG_")}
    for detail in details:
        text = describe_result(code("BAD_ARGUMENT", "STREAM", detail=detail))
        assert text.startswith("Stream failed") and len(text.splitlines()) == 2


def test_a_stale_stream_slot_is_described_as_a_bad_queue():
    text = describe_result(code("BAD_ARGUMENT", "STREAM", detail=const("F4LOAD_ARG_BAD_QUEUE")))
    assert "queue is not valid" in text


def test_refused_write_over_unerased_flash_says_to_erase_first():
    c = code("VERIFY_MISMATCH", "PROGRAM", 3, detail=const("F4LOAD_VERIFY_NOT_ERASED"))
    record = ErrorRecord(result=c, address=0x0800_C010, sr=0, cr=0, expected=0x1234_5678, actual=0x1034_5078,
                         waited_ms=0, stale_sr=0, cfsr=0, flash_size=512 * 1024, failures=1)
    text = describe_result(c, record)
    assert "not erased" in text and "still holds what it held" in text and "not erased first" in text
    assert "expected 0x12345678, read 0x10345078" in text


def test_mismatch_after_write_points_at_a_worn_cell():
    c = code("VERIFY_MISMATCH", "PROGRAM", 3, detail=const("F4LOAD_VERIFY_AFTER_WRITE"))
    assert "worn" in describe_result(c)


def test_every_verify_detail_has_words():
    details = {v for k, v in protocol.CONSTANTS.items() if k.startswith("F4LOAD_VERIFY_")}
    assert len(details) == 3
    for detail in details:
        text = describe_result(code("VERIFY_MISMATCH", "PROGRAM", 0, detail=detail))
        assert len(text.splitlines()) == 3  # headline, the detail in words, one hint


def test_cmsis_function_codes_are_named_in_the_header():
    assert (const("F4LOAD_FNC_ERASE"), const("F4LOAD_FNC_PROGRAM"), const("F4LOAD_FNC_VERIFY")) == (1, 2, 3)


def test_an_address_is_not_mistaken_for_a_result_code():
    assert describe_result(0x0000_0000 | 0x0C00_0000).startswith("unknown result code 0x0c000000")


# --- config word --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("volts, psize", [(1.8, 0), (2.0, 0), (2.1, 1), (2.6, 1), (2.7, 2), (3.3, 2), (3.6, 2)])
def test_parallelism_follows_the_supply_voltage_table(volts, psize):
    assert protocol.psize_for_voltage(volts) == psize


def test_voltage_outside_the_operating_range_is_refused():
    with pytest.raises(ValueError):
        protocol.psize_for_voltage(1.7)


def test_config_word_packs_psize_clock_and_watchdog_choice():
    word = protocol.config_word(protocol.PSIZE_X16, clock_mhz=168, iwdg=False)
    assert word & const("F4LOAD_CONFIG_PSIZE_MASK") == 1
    assert (word & const("F4LOAD_CONFIG_CLOCK_MASK")) >> const("F4LOAD_CONFIG_CLOCK_SHIFT") == 168
    assert word & const("F4LOAD_CONFIG_NO_IWDG")


def test_x64_parallelism_cannot_be_configured():
    with pytest.raises(ValueError, match="VPP"):
        protocol.config_word(3)
