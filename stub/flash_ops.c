/*
 * The flash sequences of RM0090 3.6, each checked against FLASH_SR and reported precisely.
 *
 * Every operation: wait for BSY, clear (and remember) error flags left from before, set CR with ERRIE so that
 * OPERR is reported (RM0090 3.7.4: OPERR is only set when ERRIE = 1), start, wait for BSY with a timeout, read
 * SR. CR is never written while BSY may still be set: such a write stalls the bus until BSY clears (RM0090
 * 3.6), which with a stuck BSY would hang the stub instead of reporting.
 */
#include "stub.h"

/* Locate `address` in the 1 MB sector map (RM0090 Table 5). Returns non-zero outside main flash. */
int sector_of(uint32_t address, struct sector_info *out)
{
    if (address < FLASH_MEM_BASE || address - FLASH_MEM_BASE >= FLASH_MEM_MAX_SIZE) {
        return 1;
    }
    uint32_t offset = address - FLASH_MEM_BASE;
    if (offset < FLASH_SMALL_SECTORS_END) {
        out->index = offset >> FLASH_SMALL_SECTOR_SHIFT;
        out->start = FLASH_MEM_BASE + (out->index << FLASH_SMALL_SECTOR_SHIFT);
        out->size = 1u << FLASH_SMALL_SECTOR_SHIFT;
        out->size_class = ERASE_CLASS_16K;
    } else if (offset < FLASH_LARGE_SECTORS_START) {
        out->index = FLASH_MEDIUM_SECTOR;
        out->start = FLASH_MEM_BASE + FLASH_SMALL_SECTORS_END;
        out->size = FLASH_MEDIUM_SECTOR_SIZE;
        out->size_class = ERASE_CLASS_64K;
    } else {
        uint32_t large = offset >> FLASH_LARGE_SECTOR_SHIFT;  /* 1 for sector 5 */
        out->index = FLASH_MEDIUM_SECTOR + large;
        out->start = FLASH_MEM_BASE + (large << FLASH_LARGE_SECTOR_SHIFT);
        out->size = 1u << FLASH_LARGE_SECTOR_SHIFT;
        out->size_class = ERASE_CLASS_128K;
    }
    return 0;
}

/* The sector number of `address` for result codes: 0..11, or F4LOAD_SECTOR_NONE outside main flash. */
uint32_t sector_index(uint32_t address)
{
    struct sector_info s;
    return sector_of(address, &s) ? F4LOAD_SECTOR_NONE : s.index;
}

static uint32_t psize_bits(void)
{
    return g_stub.psize << FLASH_CR_PSIZE_SHIFT;
}

/*
 * What the stub knows to be erased: [erased_start, erased_end) lies in a sector it erased itself (or the whole
 * flash after a mass erase) and nothing was programmed there since. An erase that ends without an error flag
 * leaves every bit 1 (RM0090 3.6.3); programs go forward, so a program inside the range moves its start past
 * the words written. Anything else forgets it (the failure paths, Init, UnInit).
 */
static void erased_range_set(uint32_t start, uint32_t end)
{
    g_stub.erased_start = start;
    g_stub.erased_end = end;
}

/*
 * Unlock FLASH_CR with the key sequence (RM0090 3.5.1). Keys are written only while LOCK is set: a key
 * written to an unlocked CR is itself a wrong sequence. A wrong key since reset (by the application) locks
 * CR until the next reset and makes further KEYR writes bus errors; so the writes run with FAULTMASK set and
 * CCR.BFHFNMIGN, which makes the core ignore a data bus fault (ARMv7-M B3.2.8) and leave it in CFSR, and with
 * ACTLR.DISDEFWBUF so that the fault is precise (Cortex-M4 TRM 4.3.2). Then LOCK still set says it all.
 */
uint32_t flash_unlock(uint32_t op)
{
    if (!(FLASH_CR & FLASH_CR_LOCK)) {
        return 0u;
    }
    uint32_t ccr = SCB_CCR;
    uint32_t actlr = SCB_ACTLR;
    SCB_CFSR = SCB_CFSR_BFSR_MASK;  /* write-1-to-clear any old BusFault status */
    SCB_ACTLR = actlr | SCB_ACTLR_DISDEFWBUF;
    SCB_CCR = ccr | SCB_CCR_BFHFNMIGN;
    __asm volatile("cpsid f\n\tdsb\n\tisb" ::: "memory");
    FLASH_KEYR = FLASH_KEY1;
    FLASH_KEYR = FLASH_KEY2;
    __asm volatile("dsb\n\tisb\n\tcpsie f" ::: "memory");
    SCB_CCR = ccr;
    SCB_ACTLR = actlr;
    if (FLASH_CR & FLASH_CR_LOCK) {
        stub_record_cfsr(SCB_CFSR);
        return stub_fail(F4LOAD_KIND_LOCKED, op, F4LOAD_SECTOR_NONE, 0u, (uint32_t)&FLASH_KEYR, 0u);
    }
    return 0u;
}

/* Set LOCK. The caller has made sure BSY is clear (a CR write would stall otherwise). */
void flash_lock(void)
{
    FLASH_CR = FLASH_CR_LOCK;
}

/*
 * Before an operation: unlock if needed, wait for BSY (something may still be running), then clear error
 * flags that are already set. They are sticky (RM0090 3.7.4) and would make the next operation fail for an
 * old reason; they are recorded in the error record and marked F4LOAD_STALE in a later failure code.
 */
uint32_t flash_begin(uint32_t op, uint32_t sector, uint32_t address, uint32_t timeout_ms)
{
    g_stub.stale = 0u;
    uint32_t sr = flash_wait_idle(timeout_ms);
    if (sr & FLASH_SR_BSY) {
        return stub_fail(F4LOAD_KIND_BSY_TIMEOUT, op, sector, 0u, address, sr);
    }
    uint32_t stale = sr & FLASH_SR_ERRORS;
    if (stale) {
        FLASH_SR = stale;
        stub_record_stale(stale);
        g_stub.stale = F4LOAD_STALE;
    }
    return flash_unlock(op);
}

/*
 * After an operation: BSY still set means the timeout passed; error bits mean the flash interface refused or
 * failed. The error bits are reported, then cleared so that they do not poison the next operation.
 */
static uint32_t flash_end(uint32_t op, uint32_t sector, uint32_t address, uint32_t sr)
{
    if (sr & FLASH_SR_BSY) {
        return stub_fail(F4LOAD_KIND_BSY_TIMEOUT, op, sector, 0u, address, sr);
    }
    if (sr & FLASH_SR_ERRORS) {
        uint32_t code = stub_fail(F4LOAD_KIND_FLASH_ERROR, op, sector, 0u, address, sr);
        FLASH_SR = sr & FLASH_SR_ERRORS;
        return code;
    }
    return 0u;
}

/* Sector erase, RM0090 3.6.3: CR = SER | SNB | PSIZE, then STRT. */
uint32_t flash_erase_sector(const struct sector_info *sector)
{
    uint32_t timeout = erase_timeout_ms(sector->size_class);
    uint32_t r = flash_begin(F4LOAD_OP_ERASE_SECTOR, sector->index, sector->start, timeout);
    if (r) {
        return r;
    }
    erased_range_set(0u, 0u);
    FLASH_CR = FLASH_CR_SER | ((sector->index << FLASH_CR_SNB_SHIFT) & FLASH_CR_SNB_MASK) | psize_bits() |
               FLASH_CR_ERRIE;
    FLASH_CR |= FLASH_CR_STRT;
    uint32_t sr = flash_wait_idle(timeout);
    if (!(sr & FLASH_SR_BSY)) {
        FLASH_CR = FLASH_CR_ERRIE;
    }
    r = flash_end(F4LOAD_OP_ERASE_SECTOR, sector->index, sector->start, sr);
    if (!r) {
        erased_range_set(sector->start, sector->start + sector->size);
    }
    return r;
}

/*
 * Mass erase, RM0090 3.6.3: CR = MER | PSIZE, then STRT. One write-protected sector (nWRP bit 0 in FLASH_OPTCR)
 * makes the whole mass erase fail with WRPERR (RM0090 3.7.4); it is refused before it starts instead, with
 * WRPERR and the first protected sector.
 */
uint32_t flash_erase_chip(void)
{
    uint32_t sectors = sector_index(g_stub.flash_end - 1u) + 1u;
    uint32_t protected_sectors = ~(FLASH_OPTCR >> FLASH_OPTCR_NWRP_SHIFT) & ((1u << sectors) - 1u);
    if (protected_sectors) {
        return stub_fail(F4LOAD_KIND_FLASH_ERROR, F4LOAD_OP_ERASE_CHIP, (uint32_t)__builtin_ctz(protected_sectors),
                         0u, FLASH_MEM_BASE, FLASH_SR_WRPERR);
    }
    uint32_t timeout = erase_timeout_ms(ERASE_CLASS_MASS);
    uint32_t r = flash_begin(F4LOAD_OP_ERASE_CHIP, F4LOAD_SECTOR_NONE, FLASH_MEM_BASE, timeout);
    if (r) {
        return r;
    }
    erased_range_set(0u, 0u);
    FLASH_CR = FLASH_CR_MER | psize_bits() | FLASH_CR_ERRIE;
    FLASH_CR |= FLASH_CR_STRT;
    uint32_t sr = flash_wait_idle(timeout);
    if (!(sr & FLASH_SR_BSY)) {
        FLASH_CR = FLASH_CR_ERRIE;
    }
    r = flash_end(F4LOAD_OP_ERASE_CHIP, F4LOAD_SECTOR_NONE, FLASH_MEM_BASE, sr);
    if (!r) {
        erased_range_set(FLASH_MEM_BASE, g_stub.flash_end);
    }
    return r;
}

/* A flash access of exactly the PSIZE width: a store of another width sets PGPERR (RM0090 3.7.4). */
static uint32_t flash_read(uint32_t address)
{
    switch (g_stub.psize) {
    case PSIZE_X8:
        return MMIO8(address);
    case PSIZE_X16:
        return MMIO16(address);
    default:
        return MMIO32(address);
    }
}

/*
 * Complete a store to flash before FLASH_SR is read. Flash is Normal memory and the FLASH registers are Device
 * memory (ARMv7-M A3.7.3): the core does not order a Normal store before a later Device load, and the store
 * may still sit in the write buffer when SR is read. SR would then show BSY clear (the write has not reached
 * the flash interface yet) and the read-back would race the programming. DSB waits until the store is done.
 */
static inline void flash_store_barrier(void)
{
    __asm volatile("dsb" ::: "memory");
}

static void flash_store(uint32_t address, uint32_t value)
{
    switch (g_stub.psize) {
    case PSIZE_X8:
        MMIO8(address) = (uint8_t)value;
        break;
    case PSIZE_X16:
        MMIO16(address) = (uint16_t)value;
        break;
    default:
        MMIO32(address) = value;
        break;
    }
    flash_store_barrier();
}

/*
 * Programming only clears bits (digest: program only erased locations). A unit whose data needs a 1 where the
 * flash holds a 0 cannot be programmed; it is refused before the write, so the flash keeps what it held (the
 * evidence: a write would leave old & new there). Reports VERIFY_MISMATCH / NOT_ERASED.
 */
static uint32_t refuse_not_erased(uint32_t address, uint32_t value, uint32_t old)
{
    FLASH_CR = FLASH_CR_ERRIE;
    return stub_fail_values(F4LOAD_KIND_VERIFY_MISMATCH, F4LOAD_OP_PROGRAM, sector_index(address),
                            F4LOAD_VERIFY_NOT_ERASED, address, value, old);
}

/* Words between two IWDG refreshes in the x32 program loop: 64 x 16 us = about 1 ms (DS8626 Table 40). */
#define WORDS_PER_REFRESH  64u
#define ERASED_WORD        0xFFFFFFFFu

/* 1 when every word of [address, address + 4 * words) is erased (reads all ones): any data can go there. */
static int words_erased(uint32_t address, uint32_t words)
{
    const uint32_t *p = (const uint32_t *)address;
    const uint32_t *const end = p + words;
    uint32_t all = ERASED_WORD;
    while (end - p >= 4) {
        all &= p[0] & p[1] & p[2] & p[3];
        p += 4;
    }
    while (p < end) {
        all &= *p++;
    }
    return all == ERASED_WORD;
}

/* The write at `at` of `value` ended with `sr` (BSY still set: the wait timed out), or reads back wrong. */
static uint32_t program_word_failed(volatile uint32_t *at, uint32_t value, uint32_t sr)
{
    const uint32_t op = F4LOAD_OP_PROGRAM;
    uint32_t sector = sector_index((uint32_t)at);
    if (sr & (FLASH_SR_BSY | FLASH_SR_ERRORS)) {
        return flash_end(op, sector, (uint32_t)at, sr);
    }
    uint32_t now = *at;
    FLASH_CR = FLASH_CR_ERRIE;
    return stub_fail_values(F4LOAD_KIND_VERIFY_MISMATCH, op, sector, F4LOAD_VERIFY_AFTER_WRITE, (uint32_t)at, value,
                            now);
}

/* The state of program_run(), in and out (the order of the first seven words is the asm's ldm list). */
struct program_run {
    uint32_t dst;       /* in/out: the next word to write */
    uint32_t src;       /* in/out: the buffer word after it */
    uint32_t value;     /* in/out: the data of the next word (never 0xFFFFFFFF) */
    uint32_t end;       /* one past the last word */
    uint32_t limit;     /* cycles a write may keep BSY set before the caller's timed wait decides (1 ms) */
    uint32_t kr;        /* &IWDG_KR, or `scratch` when the IWDG is left alone */
    uint32_t refresh;   /* in/out: words until the next IWDG refresh */
    uint32_t at;        /* out: 0 when every word is written and read back right, else the word in question */
    uint32_t written;   /* out: its data */
    uint32_t sr;        /* out: FLASH_SR after its write (BSY still set: 1 ms passed) */
    uint32_t scratch;
};

/* Polls of FLASH_SR between two looks at the cycle counter while a write keeps BSY set. */
#define POLLS_PER_CLOCK_READ 16u

/*
 * Wait for BSY (r12 = FLASH_BASE, r4 = POLLS_PER_CLOCK_READ, lr = 0; r4 and lr are the wait's), then test the
 * word just written: Z set when it reads back right and no SR error bit is set. BSY is polled back to back; every
 * 16 polls the wait leaves for n1 (PROGRAM_CLOCK_CHECK, out of line) to read the cycle counter (lr: when BSY was
 * first seen still set after 16 polls): a typical write costs no timer access at any clock, and one that keeps
 * BSY set is given up after 1 ms (to 9). The poll loop is entered from the top, by the fall-through from the
 * code before it and by its own loop branch alike.
 */
#define PROGRAM_WAIT_AND_CHECK(n)                                                                       \
    #n "0: ldr  r7, [r12, %[sr]]\n"                                                                     \
    "   tst     r7, %[bsy]\n"                                                                           \
    "   beq     " #n "2f\n"                                                                             \
    "   subs    r4, r4, #1\n"                                                                           \
    "   bne     " #n "0b\n"                                                                             \
    "   b       " #n "1f\n"                                                                             \
    #n "2: ldr  r12, [r5]\n"                   /* BSY clear: read back */                               \
    "   eors    r12, r12, r6\n"                                                                         \
    "   and     r4, r7, %[errors]\n"                                                                    \
    "   orrs    r12, r12, r4\n"

#define PROGRAM_CLOCK_CHECK(n)                                                                          \
    #n "1: movw r4, %[cyc_lo]\n"                                                                        \
    "   movt    r4, %[cyc_hi]\n"                                                                        \
    "   ldr     r4, [r4]\n"                                                                             \
    "   cmp     lr, #0\n"                                                                               \
    "   it      eq\n"                                                                                   \
    "   orreq   lr, r4, #1\n"                                                                           \
    "   subs    r4, r4, lr\n"                                                                           \
    "   cmp     r4, r9\n"                                                                               \
    "   bhs     9b\n"                                                                                   \
    "   mov     r4, %[polls]\n"                                                                         \
    "   b       " #n "0b\n"

/*
 * The x32 program loop for a range known to be erased: the loop the stream spends its time in, written (in
 * assembly, so that the compiler cannot spill or reorder it) for the cycles the flash stands idle between two
 * writes. A write takes 16 us (DS8626 Table 40) and whatever the core does while BSY is set costs nothing, so
 * the loop is software-pipelined: right after the store (and its DSB, see flash_store_barrier) it refreshes the
 * IWDG every 64 words, loads the next word to write and only then polls BSY; an erased word already holds
 * 0xFFFFFFFF (skipped, out of line, as is the end of the range: one branch tests both). Once BSY clears, one
 * test covers the read-back of the word just written and the SR error bits, and the next store follows: five
 * instructions between the end of one write and the start of the next. Returns when the range is done (at = 0),
 * a word failed, or a write kept BSY set for 1 ms (the caller then waits the timed way and, if it ends, calls
 * again for the words left). The straight path is few branches long on purpose: the virtual chip pays per
 * block of code, not per instruction (docs/sim.md).
 */
__attribute__((noinline, section(".text.hot"))) static void program_run(struct program_run *run)
{
    register struct program_run *r0 __asm__("r0") = run;
    __asm volatile(
        "   ldm     r0, {r1, r2, r3, r8, r9, r10, r11}\n"
        "1: str     r3, [r1]\n"               /* the write starts: BSY for 16 us */
        "   dsb\n"
        "   mov     r5, r1\n"                 /* at */
        "   mov     r6, r3\n"                 /* written */
        "   subs    r11, r11, #1\n"           /* the IWDG every WORDS_PER_REFRESH words */
        "   ittt    eq\n"
        "   movweq  r12, %[key]\n"
        "   streq   r12, [r10]\n"
        "   moveq   r11, %[words]\n"
        "   mov     r4, %[polls]\n"
        "   mov     lr, #0\n"
        "   movw    r12, %[base_lo]\n"
        "   movt    r12, %[base_hi]\n"
        "   adds    r1, r1, #4\n"             /* the next word: Z set at the end of the range or for 0xFFFFFFFF */
        "   cmp     r1, r8\n"
        "   itt     lo\n"
        "   ldrlo   r3, [r2], #4\n"
        "   cmnlo   r3, #1\n"
        "   beq     5f\n"
        PROGRAM_WAIT_AND_CHECK(3)
        "   beq     1b\n"                     /* right: the next store */
        "   b       9f\n"
        "5: cmp     r1, r8\n"                 /* the end, or an erased word to skip */
        "   bhs     6f\n"
        "   adds    r1, r1, #4\n"
        "   cmp     r1, r8\n"
        "   itt     lo\n"
        "   ldrlo   r3, [r2], #4\n"
        "   cmnlo   r3, #1\n"
        "   beq     5b\n"
        "   b       30b\n"
        "6:\n"                                /* the last word: wait, check, done */
        PROGRAM_WAIT_AND_CHECK(6)
        "   it      eq\n"
        "   moveq   r5, #0\n"
        "9: stm     r0, {r1, r2, r3}\n"
        "   str     r11, [r0, #24]\n"
        "   str     r5, [r0, #28]\n"
        "   str     r6, [r0, #32]\n"
        "   str     r7, [r0, #36]\n"
        "   b       99f\n"
        PROGRAM_CLOCK_CHECK(3)
        PROGRAM_CLOCK_CHECK(6)
        "99:\n"
        :
        : "r"(r0), [key] "i"(IWDG_KEY_RELOAD), [words] "i"(WORDS_PER_REFRESH), [polls] "i"(POLLS_PER_CLOCK_READ),
          [base_lo] "i"(FLASH_BASE & 0xFFFFu), [base_hi] "i"(FLASH_BASE >> 16), [sr] "i"(0x0Cu),
          [bsy] "i"(FLASH_SR_BSY), [errors] "i"(FLASH_SR_ERRORS),
          [cyc_lo] "i"(DWT_CYCCNT_ADDR & 0xFFFFu), [cyc_hi] "i"(DWT_CYCCNT_ADDR >> 16)
        : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
}

/* Program an erased word-aligned range at x32 (program_run), with the timed wait when a poll budget runs out. */
static uint32_t program_erased_words(uint32_t address, uint32_t size, const uint32_t *src)
{
    struct program_run run;
    run.dst = address;
    run.end = address + size;
    run.src = (uint32_t)src;
    run.limit = g_stub.cycles_per_ms * F4LOAD_PROGRAM_TIMEOUT_MS;
    run.kr = g_stub.iwdg ? (uint32_t)&IWDG_KR : (uint32_t)&run.scratch;
    run.refresh = WORDS_PER_REFRESH;
    for (;; run.dst += 4u) {  /* the first word to write: an erased word already holds 0xFFFFFFFF */
        if (run.dst >= run.end) {
            return 0u;
        }
        run.value = *(const uint32_t *)run.src;
        run.src += 4u;
        if (run.value != ERASED_WORD) {
            break;
        }
    }
    for (;;) {
        program_run(&run);
        if (!run.at) {
            return 0u;
        }
        volatile uint32_t *at = (volatile uint32_t *)run.at;
        uint32_t sr = run.sr;
        if (sr & FLASH_SR_BSY) {
            sr = flash_wait_idle(F4LOAD_PROGRAM_TIMEOUT_MS);  /* 1 ms passed: the timed wait decides */
        }
        if ((sr & (FLASH_SR_BSY | FLASH_SR_ERRORS)) || *at != run.written) {
            return program_word_failed(at, run.written, sr);
        }
        if (run.dst >= run.end) {
            return 0u;
        }
    }
}

/*
 * Any width and alignment: units of the PSIZE width, aligned to their width, so none crosses a 16-byte row
 * (PGAERR). The bytes of a unit outside the range take their current value (read back): programming only
 * clears bits, so writing a byte's own value changes nothing, and nothing outside the range changes.
 */
static uint32_t program_units(uint32_t address, uint32_t size, const uint8_t *buf)
{
    const uint32_t op = F4LOAD_OP_PROGRAM;
    const uint32_t width = 1u << g_stub.psize;
    const uint32_t mask = width == 4u ? 0xFFFFFFFFu : (1u << (8u * width)) - 1u;
    const uint32_t end = address + size;
    uint32_t unit = address & ~(width - 1u);
    while (unit < end) {
        uint32_t old = flash_read(unit);
        uint32_t value = 0u;
        for (uint32_t i = 0u; i < width; i++) {
            uint32_t a = unit + i;
            uint32_t byte = (a >= address && a < end) ? buf[a - address] : (old >> (8u * i)) & 0xFFu;
            value |= byte << (8u * i);
        }
        if (value & ~old & mask) {
            return refuse_not_erased(unit, value, old);
        }
        if (old != value) {
            flash_store(unit, value);
            uint32_t sr = flash_wait_idle(F4LOAD_PROGRAM_TIMEOUT_MS);
            uint32_t r = flash_end(op, sector_index(unit), unit, sr);
            if (r) {
                return r;
            }
        }
        uint32_t now = flash_read(unit);
        if (now != value) {
            FLASH_CR = FLASH_CR_ERRIE;
            return stub_fail_values(F4LOAD_KIND_VERIFY_MISMATCH, op, sector_index(unit),
                                    F4LOAD_VERIFY_AFTER_WRITE, unit, value, now);
        }
        unit += width;
    }
    return 0u;
}

/*
 * Program [address, address + size) from buf, RM0090 3.6.4: CR = PG | PSIZE, then one store of the PSIZE width
 * per unit, each followed by a BSY wait. A unit that already holds its data is skipped (an 0xFF tail costs
 * nothing); a unit that is not erased where the data needs a 1 is refused before it is written, so the flash
 * is not left holding old & new; every written unit is read back. Word-aligned x32 requests into erased flash
 * (known from this stub's own erase, or checked first) take the pipelined loop, everything else the general
 * one; both give the same results.
 */
uint32_t flash_program(uint32_t address, uint32_t size, const uint8_t *buf)
{
    const uint32_t op = F4LOAD_OP_PROGRAM;
    uint32_t r = flash_begin(op, sector_index(address), address, erase_timeout_ms(ERASE_CLASS_LONGEST_SECTOR));
    if (r) {
        return r;
    }
    FLASH_CR = FLASH_CR_PG | psize_bits() | FLASH_CR_ERRIE;
    const uint32_t end = address + size;
    const int known = address >= g_stub.erased_start && end <= g_stub.erased_end;
    if (g_stub.psize == PSIZE_X32 && ((address | size | (uint32_t)buf) & 3u) == 0u &&
        (known || words_erased(address, size / 4u))) {
        r = program_erased_words(address, size, (const uint32_t *)(const void *)buf);
    } else {
        r = program_units(address, size, buf);
    }
    if (r) {
        erased_range_set(0u, 0u);
        return r;
    }
    if (known) {
        g_stub.erased_start = end;
    }
    FLASH_CR = FLASH_CR_ERRIE;
    return 0u;
}

/*
 * The flash caches could hand back data from before an erase or program. The data cache may only be reset
 * while it is disabled (RM0090 3.5.4), so Init turns both caches off (the stub runs from RAM and reads flash
 * rarely) and UnInit resets them and restores what the application had.
 */
void flash_caches_off(void)
{
    uint32_t acr = FLASH_ACR;
    if (!(g_stub.saved & SAVED_CACHES)) {
        g_stub.acr_saved = acr & (FLASH_ACR_ICEN | FLASH_ACR_DCEN);
        g_stub.saved |= SAVED_CACHES;
    }
    FLASH_ACR = acr & ~(FLASH_ACR_ICEN | FLASH_ACR_DCEN);
}

void flash_caches_restore(void)
{
    uint32_t acr = FLASH_ACR & ~(FLASH_ACR_ICEN | FLASH_ACR_DCEN);
    FLASH_ACR = acr | FLASH_ACR_ICRST | FLASH_ACR_DCRST;
    FLASH_ACR = acr;
    FLASH_ACR = acr | g_stub.acr_saved;
}
