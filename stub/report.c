/*
 * Failures: one place builds the result code (layout in f4load_protocol.h) and fills the error record.
 */
#include "stub.h"

/* The error record the host reads after a failure. Exported: the host finds it by name in the ELF. */
F4LOAD_EXPORT struct f4load_error f4load_error;

static uint32_t make_code(uint32_t kind, uint32_t op, uint32_t sector, uint32_t detail, uint32_t sr_bits)
{
    return (kind << F4LOAD_KIND_SHIFT) | ((op << F4LOAD_OP_SHIFT) & F4LOAD_OP_MASK) |
           ((sector << F4LOAD_SECTOR_SHIFT) & F4LOAD_SECTOR_MASK) | g_stub.stale |
           ((detail << F4LOAD_DETAIL_SHIFT) & F4LOAD_DETAIL_MASK) | (sr_bits & F4LOAD_SR_MASK);
}

/* Fill the error record for `code` and return it. */
static uint32_t record(uint32_t code, uint32_t address, uint32_t expected, uint32_t actual)
{
    f4load_error.result = code;
    f4load_error.address = address;
    f4load_error.sr = FLASH_SR;
    f4load_error.cr = FLASH_CR;  /* reading CR never stalls; only writes wait for BSY */
    f4load_error.expected = expected;
    f4load_error.actual = actual;
    f4load_error.waited_ms = g_stub.waited_ms;
    f4load_error.failures++;
    return code;
}

uint32_t stub_fail_values(uint32_t kind, uint32_t op, uint32_t sector, uint32_t detail, uint32_t address,
                          uint32_t expected, uint32_t actual)
{
    return record(make_code(kind, op, sector, detail, 0u), address, expected, actual);
}

uint32_t stub_fail(uint32_t kind, uint32_t op, uint32_t sector, uint32_t detail, uint32_t address,
                   uint32_t sr_bits)
{
    return record(make_code(kind, op, sector, detail, sr_bits), address, 0u, 0u);
}

void stub_record_stale(uint32_t sr_bits)
{
    f4load_error.stale_sr |= sr_bits;
}

void stub_record_cfsr(uint32_t cfsr)
{
    f4load_error.cfsr = cfsr;
}


/* Init starts a fresh record. Plain stores, not a struct assignment: no memset call in a -nostdlib blob. */
void stub_record_reset(uint32_t flash_size)
{
    f4load_error.result = 0u;
    f4load_error.address = 0u;
    f4load_error.sr = 0u;
    f4load_error.cr = 0u;
    f4load_error.expected = 0u;
    f4load_error.actual = 0u;
    f4load_error.waited_ms = 0u;
    f4load_error.stale_sr = 0u;
    f4load_error.cfsr = 0u;
    f4load_error.flash_size = flash_size;
    f4load_error.failures = 0u;
}

/* Plain word copies (no struct assignment: it could become a memcpy call, and there is no libc). */
void stub_copy_error(volatile struct f4load_error *to)
{
    to->result = f4load_error.result;
    to->address = f4load_error.address;
    to->sr = f4load_error.sr;
    to->cr = f4load_error.cr;
    to->expected = f4load_error.expected;
    to->actual = f4load_error.actual;
    to->waited_ms = f4load_error.waited_ms;
    to->stale_sr = f4load_error.stale_sr;
    to->cfsr = f4load_error.cfsr;
    to->flash_size = f4load_error.flash_size;
    to->failures = f4load_error.failures;
}
