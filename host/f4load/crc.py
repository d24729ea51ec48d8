"""The STM32F4 CRC unit's checksum (RM0090 chapter 4), computed on the host.

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

import zlib
from typing import Tuple

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
