"""Build the f4load RAM stub: compile, link, check position independence, measure, and describe it.

One position-independent ELF comes out, `f4load_stub.FLM`: a CMSIS-Pack flash algorithm that pyocd's
PackFlashAlgo loads, and the image the f4load host loads (described by `f4load.stub_image.StubImage`).

Steps (`build(out_dir)`; `invoke build-stub` calls it and installs the result into host/f4load/stub/):
1. compile each C file with the flags below; `-fcallgraph-info=su` writes each file's call graph with the
   stack frame of every function;
2. compute the worst-case stack depth over the entry points from those graphs (recursion or a dynamic frame
   fails the build);
3. link with `--emit-relocs`, the stack need passed in as the absolute symbol `f4load_stack_need`;
4. check: GOT and dynamic relocation sections empty, every relocation in PrgCode/PrgData PC-relative;
5. strip the relocations (objcopy) so the result is a plain EXEC ELF like ARM's FLMs;
6. check the size budget (F4LOAD_IMAGE_BUDGET, F4LOAD_STACK_BUDGET in stub/f4load_protocol.h).

Reproducible: no debug info, no build id, no timestamps, sources compiled by relative name with
`-ffile-prefix-map`, so the same sources and compiler give byte-identical output in any directory.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Set, Tuple

from cffi import FFI
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from f4load import protocol
from f4load.stub_image import ENTRY_POINTS, StubImage

REPO = Path(__file__).resolve().parent.parent
STUB_DIR = REPO / "stub"
LINKER_SCRIPT = REPO / "toolchain" / "stub.ld"
PACKAGE_STUB_DIR = REPO / "host" / "f4load" / "stub"
ARTIFACT_NAME = "f4load_stub.FLM"
HEADER_NAME = "f4load_protocol.h"

CC = "arm-none-eabi-gcc"
OBJCOPY = "arm-none-eabi-objcopy"

SOURCES = ["entry.c", "stream.c", "flash_ops.c", "timing.c", "report.c", "crc.c", "flash_device.c"]

CFLAGS = [
    "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft",  # the stub needs no FPU (and must not touch it)
    "-std=c11", "-Os",
    "-ffreestanding",                       # no libc, no vendor HAL
    "-fno-tree-loop-distribute-patterns",   # do not turn loops into memset/memcpy calls (there is no libc)
    "-fPIE",                                # text-relative position independence (toolchain/README.md) ...
    "-fno-common",                          # ... with every global defined once, in PrgData
    "-fno-unwind-tables", "-fno-asynchronous-unwind-tables",
    "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wconversion", "-Wno-sign-conversion",
    "-fcallgraph-info=su",                  # call graph + frame sizes, for the stack need
]
LDFLAGS = [
    "-mcpu=cortex-m4", "-mthumb",
    "-nostdlib", "-nostartfiles",           # no crt0, no libc
    "-Wl,--emit-relocs",                    # keep relocations so that the build can check them
    "-Wl,--build-id=none",                  # reproducible
    "-Wl,--no-warn-rwx-segments",
]
LIBS = ["-lgcc"]                            # compiler helpers, if a division ever needs one

# Relocation types that stay correct wherever the blob is loaded: branches and PC-relative references.
PC_RELATIVE_RELOCATIONS = {
    "R_ARM_THM_CALL", "R_ARM_THM_JUMP24", "R_ARM_THM_JUMP19", "R_ARM_THM_JUMP11", "R_ARM_THM_JUMP8",
    "R_ARM_THM_JUMP6", "R_ARM_REL32", "R_ARM_THM_PC8", "R_ARM_THM_PC12", "R_ARM_THM_ALU_PREL_11_0",
    "R_ARM_THM_MOVW_PREL_NC", "R_ARM_THM_MOVT_PREL", "R_ARM_PREL31",
}
LOADED_SECTIONS = ("PrgCode", "PrgData")


class BuildError(Exception):
    """The stub does not build, or breaks one of the rules the host relies on."""


@dataclass(frozen=True)
class BuildResult:
    artifact: Path           # the FLM (ELF) to ship
    image: StubImage         # its descriptor
    stack_need: int          # worst-case stack bytes over the entry points
    stack_path: Tuple[str, ...]  # the call chain that needs it
    compiler: str            # first line of `gcc --version`


def compiler_version() -> str:
    out = subprocess.run([CC, "--version"], check=True, capture_output=True, text=True).stdout
    return out.splitlines()[0]


def _run(args: List[str], cwd: Path) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(args)}\n{proc.stdout}{proc.stderr}")


# --- stack need from -fcallgraph-info ------------------------------------------------------------------

_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
_FRAME = re.compile(r"\\n(\d+) bytes \((static|dynamic[^)]*)\)")


def _read_call_graphs(ci_files: List[Path]) -> Tuple[Dict[str, int], Dict[str, Set[str]]]:
    """Frames (bytes) and callees of every function defined in the given `.ci` files.

    GCC names a file-local function "file.c:name" and an external one "name"; a call to an external name
    resolves to its definition in another file.
    """
    frames: Dict[str, int] = {}
    calls: Dict[str, Set[str]] = {}
    for ci in ci_files:
        text = ci.read_text()
        for title, label in _NODE.findall(text):
            m = _FRAME.search(label)
            if m is None:
                continue  # a declaration: defined in another file
            if m.group(2) != "static":
                raise BuildError(f"{title} has a {m.group(2)} stack frame: the stack need cannot be bounded")
            frames[title] = int(m.group(1))
        for src, dst in _EDGE.findall(text):
            calls.setdefault(src, set()).add(dst)
    return frames, calls


def stack_need(ci_files: List[Path], roots: List[str]) -> Tuple[int, Tuple[str, ...]]:
    """Deepest stack over all call chains from `roots`; fails on recursion or an unknown callee."""
    frames, calls = _read_call_graphs(ci_files)
    memo: Dict[str, Tuple[int, Tuple[str, ...]]] = {}

    def depth(fn: str, active: Tuple[str, ...]) -> Tuple[int, Tuple[str, ...]]:
        if fn in active:
            raise BuildError(f"recursion: {' -> '.join(active + (fn,))}")
        if fn in memo:
            return memo[fn]
        if fn not in frames:
            raise BuildError(f"call to {fn}, which no stub source defines (libgcc helpers must be listed)")
        best: Tuple[int, Tuple[str, ...]] = (0, ())
        for callee in sorted(calls.get(fn, ())):
            best = max(best, depth(callee, active + (fn,)))
        memo[fn] = (frames[fn] + best[0], (fn,) + best[1])
        return memo[fn]

    return max(depth(root, ()) for root in roots)


# --- checks on the linked ELF --------------------------------------------------------------------------

def check_position_independent(elf_path: Path) -> None:
    """No GOT, no dynamic relocations, and only PC-relative relocations in the loaded sections."""
    with elf_path.open("rb") as f:
        elf = ELFFile(f)
        for name in (".got", ".got.plt", ".rel.dyn", ".dynamic", ".dynsym", ".interp"):
            section = elf.get_section_by_name(name)
            if section is not None and section.data_size:
                raise BuildError(f"{name} is not empty ({section.data_size} bytes): absolute addresses")
        seen = set()
        for section in elf.iter_sections():
            if not isinstance(section, RelocationSection):
                continue
            target = elf.get_section(section["sh_info"]).name
            seen.add(target)
            symtab = elf.get_section(section["sh_link"])
            assert isinstance(symtab, SymbolTableSection)
            for rel in section.iter_relocations():
                kind = _relocation_name(rel["r_info_type"])
                if target in LOADED_SECTIONS and kind not in PC_RELATIVE_RELOCATIONS:
                    sym = symtab.get_symbol(rel["r_info_sym"]).name
                    raise BuildError(f"{kind} against {sym or '?'} at {target}+{rel['r_offset']:#x}: "
                                     "an absolute address would be baked into the blob")
        if "PrgCode" not in seen:
            raise BuildError("no relocations kept for PrgCode: link with --emit-relocs")


def _relocation_name(number: int) -> str:
    from elftools.elf.enums import ENUM_RELOC_TYPE_ARM

    for name, value in ENUM_RELOC_TYPE_ARM.items():
        if value == number:
            return str(name)
    return f"R_ARM_{number}"


def source_constant(name: str) -> int:
    """`#define name` of the header being built (stub/), which may be newer than the one installed in the
    package that `f4load.protocol` reads."""
    ffi = FFI()
    ffi.cdef(protocol.cdef_text((STUB_DIR / HEADER_NAME).read_text(encoding="ascii")))
    return int(getattr(ffi.dlopen(None), name))


def check_budget(image: StubImage) -> None:
    image_budget = source_constant("F4LOAD_IMAGE_BUDGET")
    stack_budget = source_constant("F4LOAD_STACK_BUDGET")
    if len(image.image) > image_budget:
        raise BuildError(f"stub image is {len(image.image)} bytes, over the {image_budget}-byte budget")
    if image.stack_need > stack_budget:
        raise BuildError(f"stub needs {image.stack_need} bytes of stack, over the {stack_budget}-byte budget")


# --- the build -----------------------------------------------------------------------------------------

def build(out_dir: Path) -> BuildResult:
    """Build the stub into `out_dir` (created if needed) and check it. Returns the artifact and facts."""
    out_dir = Path(out_dir).resolve()
    obj_dir = out_dir / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    prefix_map = f"-ffile-prefix-map={STUB_DIR}=stub"
    objects, ci_files = [], []
    for source in SOURCES:
        obj = obj_dir / (Path(source).stem + ".o")
        _run([CC, *CFLAGS, prefix_map, "-c", source, "-o", str(obj)], cwd=STUB_DIR)
        objects.append(obj)
        ci_files.append(obj.with_suffix(".ci"))
    need, path = stack_need(ci_files, list(ENTRY_POINTS))

    linked = out_dir / "f4load_stub.linked.elf"
    _run([CC, *LDFLAGS, "-T", str(LINKER_SCRIPT), f"-Wl,--defsym=f4load_stack_need={need}",
          f"-Wl,-Map={out_dir / 'f4load_stub.map'}", "-o", str(linked), *map(str, objects), *LIBS], cwd=STUB_DIR)
    check_position_independent(linked)

    artifact = out_dir / ARTIFACT_NAME
    _run([OBJCOPY, "--remove-relocations=*", str(linked), str(artifact)], cwd=out_dir)
    image = StubImage.from_elf(artifact.read_bytes())
    check_budget(image)
    return BuildResult(artifact, image, need, path, compiler_version())


def install(result: BuildResult, package_dir: Path = PACKAGE_STUB_DIR) -> List[Path]:
    """Copy the artifact and the protocol header into the Python package (host/f4load/stub/)."""
    package_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.artifact, package_dir / ARTIFACT_NAME)
    shutil.copyfile(STUB_DIR / HEADER_NAME, package_dir / HEADER_NAME)
    return [package_dir / ARTIFACT_NAME, package_dir / HEADER_NAME]


def size_report(result: BuildResult) -> str:
    image = result.image
    lines = [
        f"code (PrgCode):  {image.code_size:6d} bytes",
        f"data (PrgData):  {image.data_size:6d} bytes",
        f"image total:     {len(image.image):6d} bytes  (budget {source_constant('F4LOAD_IMAGE_BUDGET')})",
        f"stack:           {image.stack_need:6d} bytes  (budget {source_constant('F4LOAD_STACK_BUDGET')}), "
        f"deepest: {' -> '.join(result.stack_path)}",
        "entry points:    " + ", ".join(f"{k}@{v:#x}" for k, v in image.entry.as_dict().items()),
        f"config word @{image.config_offset:#x}, error record @{image.error_offset:#x}, "
        f"crc @{image.crc_offset:#x}, static base @{image.static_base:#x}",
    ]
    return "\n".join(lines)
