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

`install()` also writes `f4load_stub.json` beside the FLM: the compiler that built it (first line of
`arm-none-eabi-gcc --version`), the flags, a SHA-256 of the sources and one of the FLM. `compare_with_shipped()`
holds a fresh build against the shipped stub: the same sources and flags always, the same bytes when the
compiler is the recorded one (another GCC generates other code, which the tests then check by function).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

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
RECORD_NAME = "f4load_stub.json"

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
    "-fno-ipa-icf",                         # no folding of identical functions: the call graph stays true
    "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wconversion", "-Wno-sign-conversion",
    "-fcallgraph-info=su",                  # call graph + frame sizes, for the stack need
]
LDFLAGS = [
    "-mcpu=cortex-m4", "-mthumb",
    "-nostdlib", "-nostartfiles",           # no crt0, no libc
    "-Wl,--emit-relocs",                    # keep relocations so that the build can check them
    "-Wl,--build-id=none",                  # reproducible
]   # (no --no-warn-rwx-segments: binutils before 2.39, as in Ubuntu 22.04, reject it; `_run` shows ld's
    # "LOAD segment with RWX permissions" warning, printed by Arm's own releases, only with a failing link)
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
    cflags: Tuple[str, ...]  # the flags it was built with
    ldflags: Tuple[str, ...]
    sources_sha256: str      # sources_digest() of what was compiled

    def record(self) -> Dict[str, Any]:
        """What `install()` writes to f4load_stub.json: how the artifact was made, and its digest."""
        return {
            "artifact": ARTIFACT_NAME,
            "sha256": hashlib.sha256(self.artifact.read_bytes()).hexdigest(),
            "compiler": self.compiler,
            "cflags": list(self.cflags),
            "ldflags": list(self.ldflags),
            "sources_sha256": self.sources_sha256,
        }


def compiler_version() -> str:
    out = subprocess.run([CC, "--version"], check=True, capture_output=True, text=True).stdout
    return out.splitlines()[0]


def sources_digest() -> str:
    """SHA-256 over what the stub is built from: every C/assembly source and header in stub/, the linker script
    (by file name, line ends as LF so that a checkout with CRLF gives the same digest)."""
    digest = hashlib.sha256()
    files = sorted(p for p in STUB_DIR.iterdir() if p.suffix in (".c", ".h", ".S", ".s")) + [LINKER_SCRIPT]
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return digest.hexdigest()


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
    sources = sources_digest()
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
    return BuildResult(artifact, image, need, path, compiler_version(), cflags=tuple(CFLAGS),
                       ldflags=(*LDFLAGS, "-T", LINKER_SCRIPT.name, *LIBS), sources_sha256=sources)


def install(result: BuildResult, package_dir: Path = PACKAGE_STUB_DIR) -> List[Path]:
    """Copy the artifact and the protocol header into the Python package (host/f4load/stub/), with the
    record of how the artifact was built."""
    package_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.artifact, package_dir / ARTIFACT_NAME)
    shutil.copyfile(STUB_DIR / HEADER_NAME, package_dir / HEADER_NAME)
    (package_dir / RECORD_NAME).write_text(json.dumps(result.record(), indent=2) + "\n", encoding="ascii")
    return [package_dir / ARTIFACT_NAME, package_dir / RECORD_NAME, package_dir / HEADER_NAME]


def read_record(package_dir: Path = PACKAGE_STUB_DIR) -> Dict[str, Any]:
    """The shipped f4load_stub.json ({} when there is none)."""
    try:
        record = json.loads((package_dir / RECORD_NAME).read_text(encoding="ascii"))
    except FileNotFoundError:
        return {}
    return record if isinstance(record, dict) else {}


# --- a fresh build against the shipped stub ----------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """A fresh build held against the shipped stub.

    `stale` lists why the shipped stub is not what today's sources build (then `invoke build-stub` is due).
    Otherwise the shipped stub is either the fresh build byte for byte (`identical`), or was made by another
    compiler (`other_compiler`): GCC versions generate different code from the same sources, so the fresh build
    is then checked by running it (the stub's functional tests), and byte identity needs the recorded compiler.
    """
    shipped_compiler: str
    fresh_compiler: str
    identical: bool
    stale: Tuple[str, ...]

    @property
    def other_compiler(self) -> bool:
        return not self.stale and not self.identical

    def describe(self) -> str:
        if self.stale:
            return ("the shipped stub is not the build of today's sources: " + "; ".join(self.stale) +
                    ". Run `invoke build-stub` and commit host/f4load/stub/.")
        if self.identical:
            return f"the fresh build is byte-identical to the shipped stub ({self.fresh_compiler})"
        return (f"the shipped stub was built by `{self.shipped_compiler}`; this machine has `{self.fresh_compiler}`, "
                "which generates other code from the same sources and flags. Byte identity is checked only with "
                "the recorded compiler; the fresh build was checked by the stub's functional tests instead.")


def compare(shipped: bytes, shipped_record: Dict[str, Any], fresh: bytes, fresh_record: Dict[str, Any]) -> Comparison:
    """The shipped stub (its bytes and record) against a fresh build (its bytes and record)."""
    stale = []
    if shipped_record.get("sha256") != hashlib.sha256(shipped).hexdigest():
        stale.append(f"{RECORD_NAME} does not describe the shipped {ARTIFACT_NAME}")
    if shipped_record.get("sources_sha256") != fresh_record["sources_sha256"]:
        stale.append("stub/ or toolchain/stub.ld changed since it was built")
    for key in ("cflags", "ldflags"):
        if shipped_record.get(key) != fresh_record[key]:
            stale.append(f"the build's {key} changed since it was built")
    same_compiler = shipped_record.get("compiler") == fresh_record["compiler"]
    identical = shipped == fresh
    if same_compiler and not identical and not stale:
        stale.append(f"the same compiler ({fresh_record['compiler']}) builds other bytes from the same sources")
    return Comparison(shipped_compiler=str(shipped_record.get("compiler", "an unrecorded compiler")),
                      fresh_compiler=str(fresh_record["compiler"]), identical=identical, stale=tuple(stale))


def compare_with_shipped(result: BuildResult, package_dir: Path = PACKAGE_STUB_DIR) -> Comparison:
    """A fresh build (`build()`) against the stub installed in package_dir."""
    return compare((package_dir / ARTIFACT_NAME).read_bytes(), read_record(package_dir),
                   result.artifact.read_bytes(), result.record())


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
