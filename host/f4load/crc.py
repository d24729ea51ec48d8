"""The STM32F4 CRC unit's checksum (RM0090 chapter 4), computed on the host; and a known-answer check of the
chip's own unit (`check_crc_unit`), which f4load makes before it relies on the unit (Session.crc_unit).

The CRC unit takes 32-bit words written to CRC_DR and shifts each one in most significant bit first through
the Ethernet polynomial 0x04C1_1DB7, starting from 0xFFFF_FFFF, with no bit reflection and no final XOR
(this is the CRC-32/MPEG-2 algorithm applied to 32-bit words). When the stub checksums flash, the core reads
each word little-endian from memory and writes it to CRC_DR, so the host twin takes bytes, groups them into
little-endian words and feeds each word most significant bit first.

Padding rule: a length that is not a multiple of 4 is padded with 0xFF bytes up to the next word, which is
what an erased flash holds after the last byte of an image.

Speed: zlib's crc32 is the same polynomial, reflected (LSB first), with init and final XOR 0xFFFF_FFFF. Feeding
a reflected CRC the bit-reversed stream and bit-reversing its register gives the non-reflected CRC; for one
little-endian word w the MSB-first bit stream w31..w0 is, as LSB-first bytes, bitrev8(byte3), bitrev8(byte2),
bitrev8(byte1), bitrev8(byte0). So: swap the bytes of every word, bit-reverse every byte (bytes.translate),
run zlib.crc32 with the register preset to bitrev32(crc), and bit-reverse the final register. Both steps run
in C; tests check the result against a bitwise reference. One word at a time (the CRC unit model's DR write)
uses a byte-wise table instead, also checked against the reference.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, Tuple

from f4load.registers import CRC_POLY

MASK32 = 0xFFFF_FFFF
PAD_BYTE = 0xFF
CRC_INIT = 0xFFFF_FFFF

_BITREV8 = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _bitrev32(x: int) -> int:
    return int.from_bytes(x.to_bytes(4, "little").translate(_BITREV8), "big")


def _padded(data: bytes) -> bytes:
    tail = -len(data) % 4
    return bytes(data) + bytes([PAD_BYTE]) * tail if tail else bytes(data)


def stm32_crc32(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC of `data` as the CRC unit computes it after writing its little-endian words to CRC_DR.

    `crc` is the unit's value before the first word (0xFFFF_FFFF after CR.RESET), so a long checksum can be
    computed in pieces of whole words: stm32_crc32(b, stm32_crc32(a)) == stm32_crc32(a + b) when len(a) % 4 == 0.
    """
    words = _padded(data)
    swapped = bytearray(len(words))
    for lane in range(4):
        swapped[lane::4] = words[3 - lane::4]
    stream = bytes(swapped).translate(_BITREV8)
    # zlib.crc32(data, value) presets its register to ~value and returns ~register.
    register = ~zlib.crc32(stream, ~_bitrev32(crc & MASK32) & MASK32) & MASK32
    return _bitrev32(register)


def _msb_first_table() -> Tuple[int, ...]:
    table = []
    for byte in range(256):
        value = byte << 24
        for _ in range(8):
            value = ((value << 1) ^ CRC_POLY) & MASK32 if value & 0x8000_0000 else (value << 1) & MASK32
        table.append(value)
    return tuple(table)


_TABLE = _msb_first_table()


def stm32_crc32_word(word: int, crc: int = CRC_INIT) -> int:
    """The CRC unit after one write of the 32-bit `word` to CRC_DR (the CRC unit model's per-write path).

    Same result as `stm32_crc32(word.to_bytes(4, "little"), crc)`, computed with a byte-wise MSB-first table
    because one word is too short for the zlib route to pay off.
    """
    crc = (crc ^ word) & MASK32
    for _ in range(4):
        crc = ((crc << 8) & MASK32) ^ _TABLE[crc >> 24]
    return crc


# --- the chip's CRC unit, checked with a known answer -------------------------------------------------------

# Four words that exercise every bit both ways; their CRC is computed on the host (stm32_crc32).
KNOWN_ANSWER_WORDS = (0x0000_0000, 0xFFFF_FFFF, 0x1234_5678, 0xA5A5_5A5A)
KNOWN_ANSWER = stm32_crc32(struct.pack(f"<{len(KNOWN_ANSWER_WORDS)}I", *KNOWN_ANSWER_WORDS))


@dataclass(frozen=True)
class CrcUnitCheck:
    """The chip's CRC unit fed KNOWN_ANSWER_WORDS: what it gave and what it should have given."""
    got: int
    expected: int

    @property
    def ok(self) -> bool:
        return self.got == self.expected

    def describe(self) -> str:
        return (f"the CRC unit gives {self.got:#010x} for {len(KNOWN_ANSWER_WORDS)} known words, "
                f"{'as expected' if self.ok else f'expected {self.expected:#010x}'}")


def check_crc_unit(target: Any) -> CrcUnitCheck:
    """Feed KNOWN_ANSWER_WORDS to the CRC unit through the debugger (AHB-AP) and read the result: clock on
    (RCC_AHB1ENR.CRCEN, read back before the first access, RM0090 7.3), CR.RESET, the words into DR, DR. The
    clock enable is put back as it was. Call with the core halted: an application using the unit would
    disturb it (and be disturbed). pyocd's transfer errors pass through."""
    from f4load.registers import CRC_CR, CRC_CR_RESET, CRC_DR, RCC_AHB1ENR, RCC_AHB1ENR_CRCEN

    enr = int(target.read32(RCC_AHB1ENR))
    target.write32(RCC_AHB1ENR, enr | RCC_AHB1ENR_CRCEN)
    try:
        target.read32(RCC_AHB1ENR)
        target.write32(CRC_CR, CRC_CR_RESET)
        for word in KNOWN_ANSWER_WORDS:
            target.write32(CRC_DR, word)
        got = int(target.read32(CRC_DR))
    finally:
        if not enr & RCC_AHB1ENR_CRCEN:
            target.write32(RCC_AHB1ENR, enr)
    return CrcUnitCheck(got, KNOWN_ANSWER)
