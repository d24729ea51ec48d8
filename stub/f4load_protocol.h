/*
 * f4load stub <-> host protocol: the one source of truth for both sides.
 *
 * The stub (C, arm-none-eabi-gcc) includes this header; the host (host/f4load/protocol.py) hands its text to
 * cffi's cdef. So it holds only what cdef can parse: fixed-width integer types, plain structs, and
 * `#define NAME <integer literal>` (no expressions, no suffixes). The include guard and the #include line are
 * removed by protocol.py before cdef.
 *
 * ---------------------------------------------------------------------------------------------------------
 * Entry points (CMSIS-Pack flash algorithm interface, plus our own). All are Thumb functions inside one
 * position-independent blob; call them with LR pointing at a BKPT, SP at a stack of F4LOAD_STACK_NEED bytes
 * or more. r9 is not used (the blob reaches its data PC-relative), so the blob runs wherever it is loaded.
 *
 *   uint32_t Init(uint32_t adr, uint32_t clk, uint32_t fnc)
 *       fnc: F4LOAD_FNC_* (CMSIS: 1 erase, 2 program, 3 verify). clk: core clock in Hz, 0 = unknown (pyocd
 *       passes 0), then the clock from the config word, else from RCC_CFGR.SWS: HSI -> 16 MHz, HSE or PLL ->
 *       168 MHz (the family maximum: a timeout too long is harmless, one too short fails good operations).
 *       Saves PRIMASK and masks interrupts. Reads the config word `f4load_config`
 *       (the host writes it into PrgData after loading the blob and before Init; its initial value is
 *       F4LOAD_CONFIG_DEFAULT), starts the DWT cycle counter for timeouts, makes a running IWDG last about
 *       32 s, reads F_SIZE, disables the flash caches, waits for BSY, clears stale error flags, unlocks
 *       FLASH_CR (not for fnc 3). Clears the error record. 0 on success, else a result code.
 *   uint32_t UnInit(uint32_t fnc)
 *       Locks FLASH_CR (always, also after a failure, also without Init), resets the flash caches and
 *       restores the cache enables and PRIMASK that Init found (only what Init saved). 0 on success; a BSY
 *       timeout code if the flash is still busy (then CR cannot be written: reset the chip).
 *   uint32_t EraseSector(uint32_t adr)      adr = start address of a sector. 0 or a result code.
 *   uint32_t EraseChip(void)                mass erase. 0 or a result code; a write-protected sector is refused
 *                                           before MER starts (FLASH_ERROR, WRPERR, the first such sector).
 *   uint32_t ProgramPage(uint32_t adr, uint32_t sz, const uint8_t *buf)
 *       Programs [adr, adr+sz) with the widest writes PSIZE allows. Any alignment: the bytes of a write
 *       that lie outside the range are filled with their current contents (read back, 0xFF when erased),
 *       so nothing outside the range changes. A unit that already holds the data is skipped; a unit whose
 *       data needs a 1 where the flash holds a 0 is refused before anything is written (VERIFY_MISMATCH /
 *       F4LOAD_VERIFY_NOT_ERASED); every write is read back. 0 or a result code.
 *   uint32_t Verify(uint32_t adr, uint32_t sz, const uint8_t *buf)
 *       CMSIS: returns adr+sz when [adr, adr+sz) equals buf, else the address of the first difference
 *       (details, with a result code, in the error record).
 *   uint32_t BlankCheck(uint32_t adr, uint32_t sz, uint32_t pat)
 *       0 when every byte equals (pat & 0xFF), else a result code (kind NOT_BLANK; address in the record).
 *   uint32_t Stream(uint32_t queue, uint32_t buffers, uint32_t count)
 *       Serves the command queue (erase sector, program from a buffer, CRC, stop) until STOP or a failure;
 *       see "Streaming" below. 0 after STOP, else the failing command's result code.
 *   uint32_t Crc(uint32_t adr, uint32_t sz)
 *       CRC of the words at [adr, adr+sz) by the CRC unit (poly 0x04C11DB7, init 0xFFFFFFFF, 32-bit words
 *       as read little-endian, no reflection, no final xor); adr and sz multiples of 4, inside main flash.
 *       0 on success with the CRC in `f4load_crc`, else a result code.
 *   uint32_t Run(uint32_t queue, uint32_t buffers, uint32_t count)
 *       Init(0x08000000, 0, F4LOAD_FNC_PROGRAM), then Stream(queue, buffers, count), then UnInit: a whole
 *       streaming job in one call, FLASH_CR locked again when it returns. Init's code if Init fails, else
 *       Stream's, else UnInit's.
 *   void Call(void)
 *       Takes its arguments from RAM instead of registers: loads SP from `f4load_call.sp`, calls
 *       `f4load_call.entry` with r0-r2 = `f4load_call.args`, stores the result in `f4load_call.result`, sets
 *       `f4load_call.state` to F4LOAD_CALL_RETURNED and jumps to `f4load_call.ret` (the halt word + 1). A host
 *       writes the block (with the image, or in one transfer), PC = Call (and xPSR.T once), and resumes:
 *       one block write instead of one register write per argument; the result is read from RAM.
 *   uint32_t ZlibCrc(uint32_t ranges, uint32_t count)
 *       zlib's crc32() (CRC-32: reflected, init and final xor 0xFFFFFFFF) of each of the `count` struct
 *       f4load_zlib_crc at `ranges`, by the CRC unit: what pyocd's smart flash compares (its "analyzer").
 *       Each address a multiple of 4 inside main flash, any size. 0 with every crc32 filled in, else the
 *       result code of the first bad range (the ranges before it are filled in).
 *
 * Symbols the host reads or writes (offsets in the blob come from the ELF, see stub_image.py):
 *   f4load_config  uint32_t                 config word, written by the host before Init
 *   f4load_error   struct f4load_error      error record, read by the host after a failure
 *   f4load_crc     uint32_t                 result of the last Crc()
 *   f4load_call    struct f4load_call       Call()'s arguments and result
 *
 * ---------------------------------------------------------------------------------------------------------
 * Result codes: 0 = success. Anything else is a failure laid out so that it reads in hex:
 *
 *   31..24  KIND    what went wrong (F4LOAD_KIND_*), never 0
 *   23..20  OP      which entry point (F4LOAD_OP_*); in Stream, which command
 *   19..16  SECTOR  0..11, or F4LOAD_SECTOR_NONE (mass erase, or no single sector applies)
 *   15      STALE   error flags were already set before this operation (left by the application or an
 *                   earlier unreported failure); they were cleared, and recorded in f4load_error.stale_sr
 *   14..8   DETAIL  kind-specific (F4LOAD_ARG_* for BAD_ARGUMENT, F4LOAD_VERIFY_* for VERIFY_MISMATCH)
 *    7..0   SR      FLASH_SR bits 7..0 at the failure, same positions as the register
 *                   (OPERR 1, WRPERR 4, PGAERR 5, PGPERR 6, PGSERR 7)
 *
 * Example: 0x01350010 = FLASH_ERROR in EraseSector, sector 5, WRPERR (sector 5 is write-protected).
 */
#ifndef F4LOAD_PROTOCOL_H
#define F4LOAD_PROTOCOL_H

#include <stdint.h>

#define F4LOAD_PROTOCOL_VERSION     1

#define F4LOAD_RESULT_OK            0
#define F4LOAD_KIND_SHIFT           24
#define F4LOAD_KIND_MASK            0xFF000000
#define F4LOAD_OP_SHIFT             20
#define F4LOAD_OP_MASK              0x00F00000
#define F4LOAD_SECTOR_SHIFT         16
#define F4LOAD_SECTOR_MASK          0x000F0000
#define F4LOAD_SECTOR_NONE          15
#define F4LOAD_STALE                0x00008000
#define F4LOAD_DETAIL_SHIFT         8
#define F4LOAD_DETAIL_MASK          0x00007F00
#define F4LOAD_SR_MASK              0x000000FF

/* KIND: what went wrong. */
#define F4LOAD_KIND_FLASH_ERROR     1   /* the flash interface set error bits in FLASH_SR (see SR byte) */
#define F4LOAD_KIND_BSY_TIMEOUT     2   /* FLASH_SR.BSY stayed set past twice the DS8626 maximum time */
#define F4LOAD_KIND_LOCKED          3   /* FLASH_CR still locked after the key sequence: a wrong key was
                                           written since reset, which locks CR until the next reset */
#define F4LOAD_KIND_BEYOND_END      4   /* the request reaches past the end of flash (F_SIZE) */
#define F4LOAD_KIND_BAD_ARGUMENT    5   /* address/size/alignment not acceptable (DETAIL: F4LOAD_ARG_*) */
#define F4LOAD_KIND_VERIFY_MISMATCH 6   /* flash differs from the data (DETAIL: F4LOAD_VERIFY_*) */
#define F4LOAD_KIND_NOT_BLANK       7   /* BlankCheck found a byte that is not the pattern */
#define F4LOAD_KIND_NOT_INITIALIZED 8   /* an operation was called before Init (or after UnInit) */
#define F4LOAD_KIND_BAD_CONFIG      9   /* the config word is not valid (e.g. x64 parallelism) */
#define F4LOAD_KIND_NO_CYCLE_COUNTER 10 /* DWT has no cycle counter, so no operation could be timed */
#define F4LOAD_KIND_BAD_FLASH_SIZE  11  /* F_SIZE does not name a flash size this family has */

/* Init's and UnInit's fnc argument (CMSIS-Pack flash algorithm interface). */
#define F4LOAD_FNC_ERASE            1
#define F4LOAD_FNC_PROGRAM          2
#define F4LOAD_FNC_VERIFY           3

/* OP: which entry point failed. */
#define F4LOAD_OP_INIT              1
#define F4LOAD_OP_UNINIT            2
#define F4LOAD_OP_ERASE_SECTOR      3
#define F4LOAD_OP_ERASE_CHIP        4
#define F4LOAD_OP_PROGRAM           5
#define F4LOAD_OP_VERIFY            6
#define F4LOAD_OP_BLANK_CHECK       7
#define F4LOAD_OP_CRC               8
#define F4LOAD_OP_STREAM            9
#define F4LOAD_OP_ZLIB_CRC          10
#define F4LOAD_OP_COPY              11  /* Stream: a COPY command */

/* DETAIL for F4LOAD_KIND_BAD_ARGUMENT. */
#define F4LOAD_ARG_NOT_FLASH        1   /* the address is not in main flash (0x0800_0000..) */
#define F4LOAD_ARG_NOT_SECTOR_START 2   /* EraseSector needs the first address of a sector */
#define F4LOAD_ARG_ALIGNMENT        3   /* Crc needs word-aligned address and size, ZlibCrc a word-aligned
                                           address, a stream COPY multiples of 32 bytes */
#define F4LOAD_ARG_WRAPS            4   /* adr + sz wraps around the 32-bit address space */
#define F4LOAD_ARG_BAD_QUEUE        5   /* Stream: the queue has no F4LOAD_QUEUE_MAGIC */
#define F4LOAD_ARG_BAD_COMMAND      6   /* Stream: unknown F4LOAD_CMD_* */
#define F4LOAD_ARG_BAD_BUFFER       7   /* Stream: buffer index >= count, or size > F4LOAD_BUFFER_SIZE */

/* DETAIL for F4LOAD_KIND_VERIFY_MISMATCH. */
#define F4LOAD_VERIFY_COMPARE       1   /* Verify() found a difference */
#define F4LOAD_VERIFY_AFTER_WRITE   2   /* ProgramPage read back a write and it differs: the cell is worn, or
                                           something else changed it */
#define F4LOAD_VERIFY_NOT_ERASED    3   /* ProgramPage found a unit that is not erased where the data needs a
                                           1 bit (programming only clears bits; program only erased locations)
                                           and refused it before writing: the flash still holds what it held
                                           (record: expected = the data, actual = the flash contents) */

/* ---------------------------------------------------------------------------------------------------------
 * Config word (symbol f4load_config, in PrgData). The host writes it after loading the blob, before Init.
 *
 *   1..0   PSIZE      FLASH_CR.PSIZE for erase and program: 0 x8 (VDD 1.8-2.1 V), 1 x16 (2.1-2.7 V),
 *                     2 x32 (2.7-3.6 V). 3 (x64) needs 8-9 V on VPP and is refused (BAD_CONFIG).
 *   15..8  CLOCK_MHZ  core clock in MHz for the timeouts; 0 = unknown: Init reads RCC_CFGR.SWS (HSI 16 MHz,
 *                     else 168 MHz). Init's clk argument, when not 0, wins.
 *   16     NO_IWDG    do not touch the IWDG (default: stretch a running one to ~32 s and refresh it)
 */
#define F4LOAD_CONFIG_PSIZE_MASK    0x00000003
#define F4LOAD_CONFIG_CLOCK_SHIFT   8
#define F4LOAD_CONFIG_CLOCK_MASK    0x0000FF00
#define F4LOAD_CONFIG_NO_IWDG       0x00010000
#define F4LOAD_CONFIG_DEFAULT       0x00000002

/* Timeouts (ms): twice the DS8626 Table 40 maximum (program: 100 us max, one ms granularity). */
#define F4LOAD_PROGRAM_TIMEOUT_MS   1

/* ---------------------------------------------------------------------------------------------------------
 * Error record (symbol f4load_error). Cleared by Init; written on every failure (the last one wins).
 */
struct f4load_error {
    uint32_t result;        /* result code of the last failure, 0 if none since Init */
    uint32_t address;       /* failing address: the flash write, the sector start, the first differing byte */
    uint32_t sr;            /* raw FLASH_SR read at the failure */
    uint32_t cr;            /* raw FLASH_CR read at the failure */
    uint32_t expected;      /* VERIFY_MISMATCH / NOT_BLANK: the value wanted (write width), else 0 */
    uint32_t actual;        /* the value read back */
    uint32_t waited_ms;     /* BSY_TIMEOUT: how long the stub waited */
    uint32_t stale_sr;      /* error flags found set (and cleared) before operations, OR-ed since Init */
    uint32_t cfsr;          /* LOCKED: SCB CFSR after the key writes (a bus fault is the wrong-key symptom) */
    uint32_t flash_size;    /* bytes of main flash, from F_SIZE at Init */
    uint32_t failures;      /* number of failures since Init */
};

/* Call()'s block (symbol f4load_call, in PrgData): written by the host, result and state by Call. */
struct f4load_call {
    uint32_t entry;         /* the entry point to run: its address with the Thumb bit set */
    uint32_t args[3];       /* r0, r1, r2 */
    uint32_t sp;            /* the stack top to run it on */
    uint32_t ret;           /* where Call goes when the entry point returns: the halt word's address + 1 */
    uint32_t result;        /* written by Call: the entry point's r0 */
    uint32_t state;         /* written by Call: F4LOAD_CALL_RETURNED once result is stored (the host writes 0) */
};

#define F4LOAD_CALL_RETURNED        0xF40AD0C0

/* ZlibCrc's ranges: the host writes address and size, the stub crc32. */
struct f4load_zlib_crc {
    uint32_t address;       /* first byte, a multiple of 4, in main flash */
    uint32_t size;          /* bytes, any number */
    uint32_t crc32;         /* written by the stub: zlib's crc32() of the bytes */
};

/* ---------------------------------------------------------------------------------------------------------
 * RAM layout used by the f4load host (pyocd chooses its own for the FLM). Offsets from F4LOAD_RAM_BASE.
 *
 *   +0x0000  halt word 0xE7FDBE00 (BKPT #0; B .-2): entry points return here (LR = base + 1)
 *   +0x0004  the stub image (PrgCode then PrgData), at most F4LOAD_IMAGE_BUDGET bytes
 *   ......   stack, growing down from F4LOAD_STACK_TOP
 *   +0x1800  struct f4load_queue (streaming)
 *   +0x2000  F4LOAD_BUFFER_COUNT buffers of F4LOAD_BUFFER_SIZE bytes: every byte of SRAM1 + SRAM2 left
 *            (15 x 8 KB = 120 KB), so the host can fill about a sector's worth of data while a 128 KB
 *            sector erases (1 s) and the stub never waits for the link once programming starts
 *   and F4LOAD_CCM_BUFFER_COUNT more buffers in CCM RAM (64 KB at 0x1000_0000, data bus only: fine for data),
 *   stream buffer indexes count + 0 .. count + 7: room for the bytes kept around an image in a 128 KB sector
 *   (COPY) next to the buffers that carry data.
 */
#define F4LOAD_RAM_BASE             0x20000000
#define F4LOAD_RAM_SIZE             0x00020000
#define F4LOAD_HALT_WORD            0xE7FDBE00
#define F4LOAD_IMAGE_OFFSET         0x00000004
#define F4LOAD_IMAGE_BUDGET         0x00001400
#define F4LOAD_STACK_TOP            0x00001800
#define F4LOAD_STACK_BUDGET         0x00000200
#define F4LOAD_QUEUE_OFFSET         0x00001800
#define F4LOAD_BUFFER_OFFSET        0x00002000
#define F4LOAD_BUFFER_SIZE          0x00002000
#define F4LOAD_BUFFER_COUNT         15
#define F4LOAD_CCM_BUFFER_BASE      0x10000000
#define F4LOAD_CCM_BUFFER_COUNT     8

/* ---------------------------------------------------------------------------------------------------------
 * Streaming. `uint32_t Stream(uint32_t queue, uint32_t buffers, uint32_t count)` stays running after Init and
 * serves a ring of commands in RAM while the host fills the next buffers over SWD, so the core is never
 * halted between buffers (pyocd halts, loads registers, resumes and polls for every page: a dozen probe
 * round trips each). r0 = address of struct f4load_queue, r1 = address of buffer 0, r2 = number of buffers
 * (each F4LOAD_BUFFER_SIZE bytes, one after the other). It returns 0 after a STOP command, else the result
 * code of the command that failed.
 *
 * Sequence numbers: commands are numbered 1, 2, 3, ...; command n lives in slots[n % F4LOAD_QUEUE_SLOTS].
 *   host: write the data into a free buffer, then the slot in one transfer (op, address, size, buffer,
 *         result = value = 0, and seq = n last: the seq word publishes the command). Adjacent slots go in one
 *         transfer. Before Stream starts, the queue itself may carry commands 1..queued (`queued`); the host
 *         publishes any later command only once a poll has shown status != IDLE.
 *   stub: when Stream starts it clears the seq of every slot that does not hold one of commands 1..queued
 *         (whatever an earlier batch or an application left there cannot pass for a published command), then
 *         sets status. For command n = stub_seq + 1 it polls until slot.seq == n (status WAITING, IWDG
 *         refreshed), runs it (status WORKING), writes slot.result and slot.value, and only then stub_seq = n.
 *         A slot and its buffer belong to the host again once stub_seq >= their command.
 *   failure: the record goes to `error`, the code to slot.result, then status = FAILED; stub_seq stays at
 *         the last command that succeeded (so the failed one is stub_seq + 1) and Stream returns the code.
 *   STOP: stub_seq = n, status = STOPPED, Stream returns 0 (the core halts at the halt word).
 * The host polls stub_seq, status, crc_check, crc_seq and crc_value (adjacent words, one probe command): a CRC
 * command also leaves its value in crc_value and then its number in crc_seq, so the CRC the host waits for
 * usually comes with the poll that shows it done (the host trusts it when no later CRC was published).
 * Buffers mirror 8 KB blocks of flash: the data for (or from) flash address a lies at offset a % 8 KB of the
 * buffer, so a command's range must lie in one 8 KB-aligned block. Buffer index i < count is buffers + i * 8 KB,
 * count <= i < count + F4LOAD_CCM_BUFFER_COUNT is CCM RAM (F4LOAD_CCM_BUFFER_BASE + (i - count) * 8 KB).
 * When Stream starts it feeds the four `check_words` to the CRC unit and stores the result in `crc_check`
 * (the host compares it with the known answer before it trusts a CRC: a clone or damaged unit).
 * Result codes of commands name the operation that failed (ERASE_SECTOR, ERASE_CHIP, PROGRAM, CRC, COPY; a PROGRAM with a bad
 * buffer index or size is BAD_ARGUMENT/BAD_BUFFER); OP_STREAM is used for a bad queue or an unknown command.
 */
#define F4LOAD_QUEUE_MAGIC          0xF40AD0E0
#define F4LOAD_QUEUE_SLOTS          16

#define F4LOAD_CMD_NONE             0
#define F4LOAD_CMD_ERASE_SECTOR     1   /* address = sector start */
#define F4LOAD_CMD_PROGRAM          2   /* address, size (<= F4LOAD_BUFFER_SIZE), buffer index */
#define F4LOAD_CMD_CRC              3   /* address, size (multiples of 4); value = CRC */
#define F4LOAD_CMD_STOP             4   /* return from Stream */
#define F4LOAD_CMD_ERASE_CHIP       5   /* mass erase (EraseChip): every sector of the part */
#define F4LOAD_CMD_COPY             6   /* flash [address, address + size) into a buffer (multiples of 32 bytes,
                                           one 8 KB block) */

#define F4LOAD_STATUS_IDLE          0   /* written by the host before Stream starts */
#define F4LOAD_STATUS_WAITING       1   /* all published commands done, polling the next slot's seq */
#define F4LOAD_STATUS_WORKING       2   /* running command stub_seq + 1 */
#define F4LOAD_STATUS_STOPPED       3   /* STOP done, Stream returned 0 */
#define F4LOAD_STATUS_FAILED        4   /* command stub_seq + 1 failed; `error` holds the record */

struct f4load_command {
    uint32_t op;            /* F4LOAD_CMD_* */
    uint32_t address;
    uint32_t size;
    uint32_t buffer;        /* PROGRAM, COPY: index of the buffer holding the data */
    uint32_t result;        /* written by the stub: 0 or a result code */
    uint32_t value;         /* written by the stub: CRC for F4LOAD_CMD_CRC */
    uint32_t seq;           /* the host's sequence number for this command, written last: it publishes it */
};

struct f4load_queue {
    uint32_t magic;         /* F4LOAD_QUEUE_MAGIC, written by the host */
    uint32_t queued;        /* written by the host: commands 1..queued are in the slots before Stream starts */
    uint32_t stub_seq;      /* last command completed by the stub */
    uint32_t status;        /* F4LOAD_STATUS_* */
    uint32_t crc_check;     /* written by Stream at its start: the CRC unit's CRC of check_words (read with
                               stub_seq and status) */
    uint32_t crc_seq;       /* the last CRC command completed (written after crc_value) */
    uint32_t crc_value;     /* its CRC */
    uint32_t check_words[4];            /* written by the host: words for the CRC unit's known-answer check */
    struct f4load_command slots[16];    /* slot = seq % F4LOAD_QUEUE_SLOTS */
    struct f4load_error error;          /* copy of f4load_error when Stream returns */
};

#endif /* F4LOAD_PROTOCOL_H */
