/*
 * The CMSIS-Pack flash algorithm entry points (Init, UnInit, EraseSector, EraseChip, ProgramPage, Verify,
 * BlankCheck, plus Crc and ZlibCrc) and their argument checks. The contract is written down in f4load_protocol.h.
 */
#include "stub.h"

/* Config word: the host writes it after loading the blob and before Init (pyocd passes clk = 0). */
F4LOAD_EXPORT uint32_t f4load_config = F4LOAD_CONFIG_DEFAULT;

/* Call()'s arguments and result: the host writes the block, Call reads it (f4load_protocol.h). */
F4LOAD_EXPORT struct f4load_call f4load_call;

_Static_assert(sizeof(struct f4load_call) == 32u, "f4load_call is 8 words");

/*
 * Call: run `f4load_call.entry` with the arguments, SP and return address from the block, not from registers (a
 * register costs a debugger two or three probe round trips, the block one). Naked: it sets SP itself before
 * anything touches the stack. The block is found PC-relatively (position independence: a literal holding its
 * offset from the `add`, an R_ARM_REL32). r4 keeps the block across the call (callee-saved).
 */
F4LOAD_EXPORT __attribute__((naked)) void Call(void)
{
    __asm volatile(
        "   ldr     r4, 1f\n"
        "0: add     r4, pc\n"
        "   ldr     r0, [r4, #16]\n"         /* sp */
        "   mov     sp, r0\n"
        "   ldr     r12, [r4, #0]\n"         /* entry */
        "   ldr     r0, [r4, #4]\n"
        "   ldr     r1, [r4, #8]\n"
        "   ldr     r2, [r4, #12]\n"
        "   blx     r12\n"
        "   str     r0, [r4, #24]\n"         /* result, then state: the host reads them in that order */
        "   ldr     r1, 2f\n"
        "   str     r1, [r4, #28]\n"
        "   ldr     r1, [r4, #20]\n"         /* ret: the halt word */
        "   bx      r1\n"
        "   .align  2\n"
        "1: .word   f4load_call - (0b + 4)\n"
        "2: .word   %c0\n"
        :
        : "i"(F4LOAD_CALL_RETURNED));
}

struct stub_state g_stub;

/* The header's layouts, as the host's cffi sees them (tests/test_protocol.py checks the same numbers). */
_Static_assert(sizeof(struct f4load_error) == 44u, "f4load_error is 11 words");
_Static_assert(sizeof(((struct f4load_queue *)0)->slots) / sizeof(struct f4load_command) == F4LOAD_QUEUE_SLOTS,
               "queue slots match F4LOAD_QUEUE_SLOTS");

/* The flash sizes F_SIZE may name on an F405/407/415/417 (RM0090 1: 512 KB xE, 1 MB xG parts). */
#define F_SIZE_XE_KB   512u
#define F_SIZE_XG_KB   1024u

uint32_t not_initialized(uint32_t op)
{
    g_stub.stale = 0u;
    return g_stub.initialized ? 0u : stub_fail(F4LOAD_KIND_NOT_INITIALIZED, op, F4LOAD_SECTOR_NONE, 0u, 0u, 0u);
}

/*
 * [adr, adr + sz) must lie in main flash of this part. Addresses outside the 1 MB map are bad arguments;
 * addresses inside it but past F_SIZE (sectors 8-11 of a 512 KB part) are BEYOND_END, reported at the first
 * address that is not there.
 */
uint32_t check_range(uint32_t op, uint32_t adr, uint32_t sz)
{
    struct sector_info s;
    if (sector_of(adr, &s)) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, F4LOAD_SECTOR_NONE, F4LOAD_ARG_NOT_FLASH, adr, 0u);
    }
    if (adr + sz < adr) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, s.index, F4LOAD_ARG_WRAPS, adr, 0u);
    }
    if (adr + sz > g_stub.flash_end) {
        uint32_t first_missing = adr > g_stub.flash_end ? adr : g_stub.flash_end;
        return stub_fail(F4LOAD_KIND_BEYOND_END, op, s.index, 0u, first_missing, 0u);
    }
    return 0u;
}

/*
 * The core clock in Hz for the timeouts: Init's clk, else the config word's CLOCK_MHZ, else a guess from
 * RCC_CFGR.SWS (RM0090 7.3.3: the clock that actually drives SYSCLK). pyocd passes clk = 0, and a debugger
 * that attaches to a running application finds whatever clock it set up, often the PLL at 168 MHz: assuming
 * HSI then would make every timeout 10.5 times too short. So: HSI -> 16 MHz; HSE or PLL -> 168 MHz, the
 * family maximum (DS8626), which can only make a timeout longer than needed, never shorter.
 */
static uint32_t core_clock_hz(uint32_t clk, uint32_t config)
{
    uint32_t mhz = (config & F4LOAD_CONFIG_CLOCK_MASK) >> F4LOAD_CONFIG_CLOCK_SHIFT;
    if (clk) {
        return clk;
    }
    if (mhz) {
        return mhz * 1000000u;
    }
    return (RCC_CFGR & RCC_CFGR_SWS_MASK) == RCC_CFGR_SWS_HSI ? HSI_HZ : SYSCLK_MAX_HZ;
}

/* PRIMASK as the application left it (1: interrupts masked). */
static uint32_t primask_read(void)
{
    uint32_t primask;
    __asm volatile("mrs %0, primask" : "=r"(primask));
    return primask;
}

/*
 * Init: prepare the clock for timeouts, the watchdog, the caches and the flash interface.
 * Interrupts are masked (PRIMASK): the application's handlers must not run while the flash is being changed
 * under them. UnInit gives the application back the PRIMASK it had.
 */
F4LOAD_EXPORT uint32_t Init(uint32_t adr, uint32_t clk, uint32_t fnc)
{
    (void)adr;
    const uint32_t op = F4LOAD_OP_INIT;
    if (!(g_stub.saved & SAVED_PRIMASK)) {
        g_stub.primask_saved = primask_read();
        g_stub.saved |= SAVED_PRIMASK;
    }
    __asm volatile("cpsid i" ::: "memory");
    g_stub.initialized = 0u;
    g_stub.stale = 0u;
    g_stub.waited_ms = 0u;
    g_stub.erased_start = g_stub.erased_end = 0u;  /* known erased: nothing yet (flash_ops.c) */
    g_stub.psize = PSIZE_X8;  /* a valid index for the timeout table until the config is read */

    uint32_t f_size_kb = MMIO16(F_SIZE_ADDR);
    stub_record_reset(f_size_kb * KB);

    uint32_t config = f4load_config;
    g_stub.cycles_per_ms = core_clock_hz(clk, config) / 1000u;
    if (cycle_counter_start()) {
        return stub_fail(F4LOAD_KIND_NO_CYCLE_COUNTER, op, F4LOAD_SECTOR_NONE, 0u, (uint32_t)&DWT_CTRL, 0u);
    }
    g_stub.iwdg = 0u;
    if (!(config & F4LOAD_CONFIG_NO_IWDG)) {
        watchdog_stretch();
    }
    uint32_t psize = config & F4LOAD_CONFIG_PSIZE_MASK;
    if (psize > PSIZE_X32) {
        return stub_fail(F4LOAD_KIND_BAD_CONFIG, op, F4LOAD_SECTOR_NONE, 0u, config, 0u);
    }
    g_stub.psize = psize;
    if (f_size_kb != F_SIZE_XE_KB && f_size_kb != F_SIZE_XG_KB) {
        return stub_fail(F4LOAD_KIND_BAD_FLASH_SIZE, op, F4LOAD_SECTOR_NONE, 0u, F_SIZE_ADDR, 0u);
    }
    g_stub.flash_end = FLASH_MEM_BASE + f_size_kb * KB;
    flash_caches_off();

    /* Verify only reads: leave CR locked then (no key writes, no risk of a bus fault). */
    if (fnc != F4LOAD_FNC_VERIFY) {
        uint32_t timeout = erase_timeout_ms(ERASE_CLASS_LONGEST_SECTOR);
        uint32_t r = flash_begin(op, F4LOAD_SECTOR_NONE, FLASH_MEM_BASE, timeout);
        if (r) {
            return r;
        }
    }
    g_stub.initialized = 1u;
    return 0u;
}

/*
 * UnInit: lock FLASH_CR whatever happened before. The one case where it cannot: BSY still set (a CR write
 * would stall the bus until BSY clears, possibly forever); then report the timeout, and the host resets.
 * Init may never have run (or failed early), so UnInit starts the cycle counter itself and restores only
 * what Init saved. Without a working cycle counter no wait could time out: one look at BSY decides.
 */
F4LOAD_EXPORT uint32_t UnInit(uint32_t fnc)
{
    (void)fnc;
    g_stub.stale = 0u;
    g_stub.initialized = 0u;
    if (g_stub.cycles_per_ms == 0u) {  /* never initialised */
        g_stub.cycles_per_ms = core_clock_hz(0u, f4load_config) / 1000u;
    }
    uint32_t timeout = erase_timeout_ms(ERASE_CLASS_LONGEST_SECTOR);
    uint32_t sr = cycle_counter_start() ? FLASH_SR : flash_wait_idle(timeout);
    if (sr & FLASH_SR_BSY) {
        return stub_fail(F4LOAD_KIND_BSY_TIMEOUT, F4LOAD_OP_UNINIT, F4LOAD_SECTOR_NONE, 0u, 0u, sr);
    }
    flash_lock();
    if (g_stub.saved & SAVED_CACHES) {
        flash_caches_restore();
    }
    if ((g_stub.saved & SAVED_PRIMASK) && !(g_stub.primask_saved & 1u)) {
        __asm volatile("cpsie i" ::: "memory");
    }
    g_stub.saved = 0u;
    return 0u;
}

/* Erase the sector that starts at `adr` (shared by EraseSector and Stream). */
uint32_t erase_sector_at(uint32_t op, uint32_t adr)
{
    struct sector_info s;
    if (sector_of(adr, &s)) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, F4LOAD_SECTOR_NONE, F4LOAD_ARG_NOT_FLASH, adr, 0u);
    }
    if (adr != s.start) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, s.index, F4LOAD_ARG_NOT_SECTOR_START, adr, 0u);
    }
    if (adr >= g_stub.flash_end) {
        return stub_fail(F4LOAD_KIND_BEYOND_END, op, s.index, 0u, adr, 0u);
    }
    return flash_erase_sector(&s);
}

F4LOAD_EXPORT uint32_t EraseSector(uint32_t adr)
{
    const uint32_t op = F4LOAD_OP_ERASE_SECTOR;
    uint32_t r = not_initialized(op);
    return r ? r : erase_sector_at(op, adr);
}

F4LOAD_EXPORT uint32_t EraseChip(void)
{
    uint32_t r = not_initialized(F4LOAD_OP_ERASE_CHIP);
    return r ? r : flash_erase_chip();
}

F4LOAD_EXPORT uint32_t ProgramPage(uint32_t adr, uint32_t sz, const uint8_t *buf)
{
    const uint32_t op = F4LOAD_OP_PROGRAM;
    uint32_t r = not_initialized(op);
    if (!r) {
        r = check_range(op, adr, sz);
    }
    if (!r && sz) {
        r = flash_program(adr, sz, buf);
    }
    return r;
}

/* CMSIS Verify: adr + sz on success, else the first differing address (the record says more). */
F4LOAD_EXPORT uint32_t Verify(uint32_t adr, uint32_t sz, const uint8_t *buf)
{
    const uint32_t op = F4LOAD_OP_VERIFY;
    if (not_initialized(op) || check_range(op, adr, sz)) {
        return adr;
    }
    for (uint32_t i = 0u; i < sz; i++) {
        uint32_t have = MMIO8(adr + i);
        if (have != buf[i]) {
            stub_fail_values(F4LOAD_KIND_VERIFY_MISMATCH, op, sector_index(adr + i), F4LOAD_VERIFY_COMPARE, adr + i,
                             buf[i], have);
            return adr + i;
        }
        if ((i & (BYTES_PER_REFRESH - 1u)) == 0u) {
            watchdog_refresh();
        }
    }
    return adr + sz;
}

/* CMSIS BlankCheck: 0 when every byte is (pat & 0xFF), else NOT_BLANK with the address in the record. */
F4LOAD_EXPORT uint32_t BlankCheck(uint32_t adr, uint32_t sz, uint32_t pat)
{
    const uint32_t op = F4LOAD_OP_BLANK_CHECK;
    uint32_t r = not_initialized(op);
    if (!r) {
        r = check_range(op, adr, sz);
    }
    if (r) {
        return r;
    }
    uint32_t want = pat & 0xFFu;
    for (uint32_t i = 0u; i < sz; i++) {
        uint32_t have = MMIO8(adr + i);
        if (have != want) {
            return stub_fail_values(F4LOAD_KIND_NOT_BLANK, op, sector_index(adr + i), 0u, adr + i, want, have);
        }
        if ((i & (BYTES_PER_REFRESH - 1u)) == 0u) {
            watchdog_refresh();
        }
    }
    return 0u;
}

/* check_range, and `aligned` (the address, or address | size) a multiple of 4: the CRC unit takes words. */
static uint32_t check_word_range(uint32_t op, uint32_t adr, uint32_t sz, uint32_t aligned)
{
    uint32_t r = check_range(op, adr, sz);
    if (!r && (aligned & 3u)) {
        r = stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, sector_index(adr), F4LOAD_ARG_ALIGNMENT, adr, 0u);
    }
    return r;
}

/* CRC of the word-aligned range [adr, adr + sz) into *value and f4load_crc (shared by Crc and Stream). */
uint32_t crc_range(uint32_t op, uint32_t adr, uint32_t sz, uint32_t *value)
{
    uint32_t r = check_word_range(op, adr, sz, adr | sz);
    if (!r) {
        *value = crc_unit_words(adr, sz / 4u);
    }
    return r;
}

/* CRC of flash words by the CRC unit; the value goes to f4load_crc (see crc.c). */
F4LOAD_EXPORT uint32_t Crc(uint32_t adr, uint32_t sz)
{
    const uint32_t op = F4LOAD_OP_CRC;
    uint32_t value;
    uint32_t r = not_initialized(op);
    return r ? r : crc_range(op, adr, sz, &value);
}

/*
 * zlib's CRC-32 of each range (pyocd's CRC analyzer: f4load.pyocd_targets.F4LoadFlash.compute_crcs). One call
 * for all of pyocd's pages: a call costs a dozen probe round trips, the CRC of a 16 KB page 1.5 ms at 16 MHz.
 */
F4LOAD_EXPORT uint32_t ZlibCrc(uint32_t ranges, uint32_t count)
{
    const uint32_t op = F4LOAD_OP_ZLIB_CRC;
    uint32_t r = not_initialized(op);
    struct f4load_zlib_crc *range = (struct f4load_zlib_crc *)ranges;
    for (uint32_t i = 0u; !r && i < count; i++, range++) {
        r = check_word_range(op, range->address, range->size, range->address);
        if (!r) {
            range->crc32 = zlib_crc32(range->address, range->size);
        }
    }
    return r;
}
