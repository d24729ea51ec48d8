"""Input is bounded before it is read (issue 10): a file or stream larger than any image for this family can
be is refused with one line, without reading it all (f4load.image, docs/image-and-plan.md).

Endless inputs are real: /dev/zero, a FIFO and a pipe fed by a writer that never stops, a sparse 4 GB file
(no disk used). A reader that did not bound its input would never return on them; the tests' timeouts are
only there to fail instead of hanging.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from f4load.image import FAMILY_FLASH_SIZE, ImageError, load_image
from f4load.part import FLASH_START, KB

EXIT_USAGE = 2
GB = 1024 * KB * KB
# Far more than f4load needs to start (about 60 MB) and far less than reading an endless input would take.
MEMORY_LIMIT_KB = 300 * 1024
CHILD_TIMEOUT_S = 60  # generous: the refusal takes well under a second


def run_f4load(*args: str, stdin: int = subprocess.DEVNULL) -> Tuple[subprocess.Popen, int, int, str]:
    """Start `f4load ARGS` as a program; return (process, exit status, peak RSS in KB, stderr).

    os.wait4 gives this child's own resource usage, so its peak memory is measured, not that of every child
    the test process ever had.
    """
    process = subprocess.Popen([sys.executable, "-c", "import sys; from f4load.cli import main; sys.exit(main())",
                                *args], stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr: List[bytes] = []
    reader = threading.Thread(target=lambda: stderr.append(process.stderr.read()), daemon=True)  # type: ignore
    reader.start()
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            os.wait4(process.pid, 0)
            pytest.fail(f"f4load {' '.join(args)} did not end within {CHILD_TIMEOUT_S} s: it reads without bound")
        time.sleep(0.02)
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join(CHILD_TIMEOUT_S)
    return process, process.returncode, usage.ru_maxrss, b"".join(stderr).decode()


def endless_writer(path_or_fd: object) -> threading.Thread:
    """Write zeros to a FIFO (path) or a pipe (fd) until the reader closes it."""
    def write() -> None:
        try:
            with open(path_or_fd, "wb", buffering=0) as out:  # type: ignore[call-overload]
                chunk = bytes(64 * KB)
                while True:
                    out.write(chunk)
        except (BrokenPipeError, OSError):
            pass

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "endless.bin"
    os.mkfifo(path)
    yield path


# --- the command line -----------------------------------------------------------------------------------------
def test_f4load_dev_zero_as_bin_exits_2_at_once_with_memory_bounded(sim_state_dir):
    _process, status, peak_kb, stderr = run_f4load("/dev/zero", "--format", "bin")
    assert status == EXIT_USAGE, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stderr.startswith("f4load: error: /dev/zero: more than 1,048,576 bytes from a pipe or device, too large")
    assert "must end by 0x080fffff, the end of the largest main flash of the family (1 MB)" in stderr
    assert peak_kb < MEMORY_LIMIT_KB


def test_an_endless_pipe_on_stdin_is_refused_after_its_bound(sim_state_dir):
    read_end, write_end = os.pipe()
    writer = endless_writer(write_end)
    try:
        _process, status, peak_kb, stderr = run_f4load("/dev/stdin", "--format", "hex", stdin=read_end)
    finally:
        os.close(read_end)
    writer.join(CHILD_TIMEOUT_S)
    assert status == EXIT_USAGE, stderr
    assert stderr.count("\n") == 1 and "/dev/stdin: more than 18,874,368 bytes from a pipe or device" in stderr
    assert "Intel HEX text for the largest main flash of the family (1 MB) takes at most 18 MB" in stderr
    assert peak_kb < MEMORY_LIMIT_KB


# --- the reader --------------------------------------------------------------------------------------------------
def test_a_fifo_that_never_ends_is_refused_one_byte_past_the_bound(fifo):
    writer = endless_writer(fifo)
    with pytest.raises(ImageError, match=r"more than 1,048,576 bytes from a pipe or device, too large"):
        load_image(fifo, format="bin")
    writer.join(CHILD_TIMEOUT_S)
    assert not writer.is_alive()  # the reader closed the FIFO, and the writer saw it


def test_a_fifo_holding_a_small_image_is_read_whole(fifo):
    data = bytes(range(256)) * 10

    def write() -> None:
        with open(fifo, "wb") as out:
            out.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    image = load_image(fifo, format="bin")
    writer.join(CHILD_TIMEOUT_S)
    assert [(s.address, s.data) for s in image.segments] == [(FLASH_START, data)]


@pytest.mark.parametrize("name, why", [
    ("huge.bin", "a raw binary placed at 0x08000000 must end by 0x080fffff"),
    ("huge.hex", "Intel HEX text for the largest main flash of the family (1 MB) takes at most 18 MB"),
    ("huge.srec", "Motorola S-record text for the largest main flash of the family (1 MB) takes at most 18 MB"),
])
def test_a_sparse_4gb_file_is_refused_by_its_size(tmp_path, name, why):
    path = tmp_path / name
    with open(path, "wb") as out:
        out.truncate(4 * GB)  # sparse: no disk used
    with pytest.raises(ImageError) as refused:
        load_image(path)
    assert str(refused.value).startswith(f"{path}: 4,294,967,296 bytes (4 GB), too large: {why}")


def test_the_bin_bound_is_the_flash_left_after_the_placement_address(tmp_path):
    path = tmp_path / "app.bin"
    path.write_bytes(bytes(768 * KB))
    image = load_image(path, address=FLASH_START + 256 * KB)  # exactly to the end of 1 MB
    assert image.end == FLASH_START + FAMILY_FLASH_SIZE
    path.write_bytes(bytes(768 * KB + 1))
    with pytest.raises(ImageError, match=r"786,433 bytes \(768.0 KB\), too large: a raw binary placed at "
                                         r"0x08040000 must end by 0x080fffff"):
        load_image(path, address=FLASH_START + 256 * KB)


def test_a_4gb_elf_with_debug_data_is_read_only_where_it_is_loadable(tmp_path):
    """An ELF has no size bound: f4load reads its headers and PT_LOAD segments only, never the rest."""
    gcc = shutil.which("arm-none-eabi-gcc")
    assert gcc, "arm-none-eabi-gcc is required (Debian gcc-arm-none-eabi)"
    (tmp_path / "app.c").write_text("const unsigned table[256] = {1, 2, 3};\nvoid reset(void) { for (;;); }\n")
    (tmp_path / "app.ld").write_text("MEMORY { FLASH (rx) : ORIGIN = 0x08000000, LENGTH = 1024K }\n"
                                     "ENTRY(reset)\nSECTIONS { .text : { *(.text*) *(.rodata*) } > FLASH }\n")
    subprocess.run([gcc, "-mcpu=cortex-m4", "-mthumb", "-Os", "-g", "-nostdlib", "-T", "app.ld", "app.c", "-o",
                    "app.elf"], cwd=tmp_path, check=True)
    elf = tmp_path / "app.elf"
    small = load_image(elf)
    with open(elf, "r+b") as out:
        out.truncate(4 * GB)  # as if it carried 4 GB of debug sections after its own: sparse, no disk used
    big = load_image(elf)
    assert [(s.address, s.data) for s in big.segments] == [(s.address, s.data) for s in small.segments]
    assert small.size >= 1024


def test_an_elf_from_a_stream_must_start_like_one(fifo):
    writer = endless_writer(fifo)
    with pytest.raises(ImageError, match=r"not a valid ELF file: it does not start with the ELF magic"):
        load_image(fifo, format="elf")
    writer.join(CHILD_TIMEOUT_S)
