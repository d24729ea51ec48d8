/*
 * Stream(): the entry point that stays running and serves the command queue in RAM (protocol in
 * f4load_protocol.h, "Streaming"). The host fills buffers and slots over SWD while the core erases and
 * programs; nobody halts the core between buffers.
 *
 * The order of every step is chosen so that the host can keep the ring full (esptool's stub works the same
 * way: acknowledge first, then process, so that the next block can already be on its way):
 * - a command's result is published (slot.result, then stub_seq) as soon as it is done and *before* the
 *   stub looks at the next one: from that moment the host may refill that slot and its buffer, while the
 *   stub already works on the commands queued behind it;
 * - on a failure the error record is copied into the queue and the code into the slot before status says
 *   FAILED, so a host that sees FAILED finds everything it needs without halting the core;
 * - while the queue is empty the stub polls the next slot's seq from RAM only (no bus traffic to the flash
 *   interface) and refreshes the IWDG between polls; every flash wait refreshes it too (timing.c, flash_ops.c).
 * - the slot's seq word is the publication: the host writes the slot in one transfer with seq last, so a
 *   command costs the host one probe command besides its data.
 */
#include "stub.h"

/* Polls of a slot's seq between two IWDG refreshes while the queue is empty: a few cycles each, well under 1 ms. */
#define IDLE_POLLS_PER_REFRESH  256u

typedef volatile struct f4load_queue queue_t;
typedef volatile struct f4load_command command_t;

/* A data memory barrier: the host must never see stub_seq before the slot's result (ARMv7-M A3.7.3). */
static inline void publish_barrier(void)
{
    __asm volatile("dmb" ::: "memory");
}

/*
 * The mirror of publish_barrier: once a slot's seq is seen, the slot's other words and its buffer are read only
 * after it, never from before (ARMv7-M A3.7.3 lets the core reorder the loads otherwise). The host wrote them
 * first.
 */
static inline void acquire_barrier(void)
{
    __asm volatile("dmb" ::: "memory");
}

/* Wait until the host publishes command `seq` (its slot's seq word). */
static void wait_for_host(command_t *cmd, uint32_t seq)
{
    while (cmd->seq != seq) {
        watchdog_refresh();
        for (uint32_t n = IDLE_POLLS_PER_REFRESH; n != 0u && cmd->seq != seq; n--) {
        }
    }
}

/*
 * The RAM that mirrors the 8 KB block of flash holding `address`, for a command on [address, address + size)
 * with buffer `index`: the buffer's address plus address % 8 KB (f4load_protocol.h, "Streaming"). 0 (and the
 * code in *r) when the index names no buffer or the range leaves its block.
 */
static uint32_t buffer_for(command_t *cmd, uint32_t op, uint32_t buffers, uint32_t count, uint32_t *r)
{
    uint32_t address = cmd->address;
    uint32_t index = cmd->buffer;
    uint32_t offset = address & (F4LOAD_BUFFER_SIZE - 1u);
    uint32_t base = index < count ? buffers + index * F4LOAD_BUFFER_SIZE
                                  : F4LOAD_CCM_BUFFER_BASE + (index - count) * F4LOAD_BUFFER_SIZE;
    if (index >= count + F4LOAD_CCM_BUFFER_COUNT || cmd->size > F4LOAD_BUFFER_SIZE - offset) {
        *r = stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, sector_index(address), F4LOAD_ARG_BAD_BUFFER, address, 0u);
        return 0u;
    }
    *r = check_range(op, address, cmd->size);
    return base + offset;
}

static uint32_t program_from_buffer(command_t *cmd, uint32_t buffers, uint32_t count)
{
    uint32_t r;
    uint32_t src = buffer_for(cmd, F4LOAD_OP_PROGRAM, buffers, count, &r);
    if (!r && cmd->size) {
        r = flash_program(cmd->address, cmd->size, (const uint8_t *)src);
    }
    return r;
}

/*
 * COPY: flash [address, address + size) into its buffer (the bytes kept around an image), in blocks of 32 bytes
 * (address and size multiples of 32; the host copies whole 8 KB blocks).
 */
static uint32_t copy_to_buffer(command_t *cmd, uint32_t buffers, uint32_t count)
{
    const uint32_t op = F4LOAD_OP_COPY;
    uint32_t r;
    uint32_t dst = buffer_for(cmd, op, buffers, count, &r);
    if (!r && ((cmd->address | cmd->size) & 31u)) {
        r = stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, sector_index(cmd->address), F4LOAD_ARG_ALIGNMENT, cmd->address,
                      0u);
    }
    if (!r && cmd->size) {
        copy_blocks(dst, cmd->address, cmd->size / 32u);
    }
    return r;
}

/* Run one command; 0 or a result code. A CRC goes to *value. */
static uint32_t run_command(command_t *cmd, uint32_t op, uint32_t buffers, uint32_t count, uint32_t *value)
{
    g_stub.stale = 0u;
    switch (op) {
    case F4LOAD_CMD_ERASE_SECTOR:
        return erase_sector_at(F4LOAD_OP_ERASE_SECTOR, cmd->address);
    case F4LOAD_CMD_ERASE_CHIP:
        return flash_erase_chip();
    case F4LOAD_CMD_PROGRAM:
        return program_from_buffer(cmd, buffers, count);
    case F4LOAD_CMD_CRC:
        return crc_range(F4LOAD_OP_CRC, cmd->address, cmd->size, value);
    case F4LOAD_CMD_COPY:
        return copy_to_buffer(cmd, buffers, count);
    case F4LOAD_CMD_STOP:
        return 0u;
    default:
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, F4LOAD_OP_STREAM, F4LOAD_SECTOR_NONE, F4LOAD_ARG_BAD_COMMAND,
                         op, 0u);
    }
}

/*
 * Serve the queue at `queue` with `count` buffers of F4LOAD_BUFFER_SIZE bytes from `buffers`, until STOP
 * (returns 0) or a failure (returns its code). Needs a successful Init (FLASH_CR unlocked, timeouts set).
 * Before Init, or when `queue` has no magic word, it returns at once and writes nothing there: the address
 * may not be a queue at all (status and error record go only into a queue that is known to be one).
 */
F4LOAD_EXPORT uint32_t Stream(uint32_t queue, uint32_t buffers, uint32_t count)
{
    queue_t *q = (queue_t *)queue;
    uint32_t r = not_initialized(F4LOAD_OP_STREAM);
    if (r) {
        return r;
    }
    if (q->magic != F4LOAD_QUEUE_MAGIC) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, F4LOAD_OP_STREAM, F4LOAD_SECTOR_NONE, F4LOAD_ARG_BAD_QUEUE,
                         queue, 0u);
    }
    q->crc_check = crc_unit_words((uint32_t)&q->check_words[0], 4u);  /* the host's known-answer check */
    uint32_t done = q->stub_seq;
    /* The slots of later commands may hold anything (an earlier batch, an application): their seq is cleared
       before status first changes, and the host publishes into them only after it has seen that change. */
    for (uint32_t n = q->queued + 1u; n <= done + F4LOAD_QUEUE_SLOTS; n++) {
        q->slots[n % F4LOAD_QUEUE_SLOTS].seq = 0u;
    }
    publish_barrier();
    uint32_t op = F4LOAD_CMD_NONE;
    while (!r && op != F4LOAD_CMD_STOP) {
        uint32_t seq = done + 1u;
        command_t *cmd = &q->slots[seq % F4LOAD_QUEUE_SLOTS];
        if (cmd->seq != seq) {
            q->status = F4LOAD_STATUS_WAITING;
            wait_for_host(cmd, seq);
        }
        acquire_barrier();
        q->status = F4LOAD_STATUS_WORKING;
        uint32_t value = 0u;
        op = cmd->op;
        r = run_command(cmd, op, buffers, count, &value);
        cmd->value = value;
        cmd->result = r;
        if (!r) {
            if (op == F4LOAD_CMD_CRC) {
                q->crc_value = value;
                publish_barrier();
                q->crc_seq = seq;
            }
            /* Publish first, then look at the next command: the host can refill this slot and its buffer
               while the next one runs. */
            publish_barrier();
            q->stub_seq = seq;
            done = seq;
        }
    }
    /* The record before the status: a host that sees FAILED (or STOPPED) reads a complete record. */
    stub_copy_error(&q->error);
    publish_barrier();
    q->status = r ? F4LOAD_STATUS_FAILED : F4LOAD_STATUS_STOPPED;
    return r;
}

/*
 * Init, Stream and UnInit in one call (f4load's streaming host): FLASH_CR is locked again when it returns, whatever
 * happened. Init's code if it failed, else Stream's, else UnInit's.
 */
F4LOAD_EXPORT uint32_t Run(uint32_t queue, uint32_t buffers, uint32_t count)
{
    uint32_t r = Init(FLASH_MEM_BASE, 0u, F4LOAD_FNC_PROGRAM);
    if (!r) {
        r = Stream(queue, buffers, count);
    }
    uint32_t u = UnInit(F4LOAD_FNC_PROGRAM);
    return r ? r : u;
}
