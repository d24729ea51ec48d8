"""Developer tasks (invoke). `invoke --list` shows them."""
from __future__ import annotations

import sys

from invoke import task

PY = sys.executable


@task
def test(c, k="", x=False):
    """Run the whole test suite (pytest, on all cores)."""
    args = ["-n", "auto"]
    if k:
        args += ["-k", repr(k)]
    if x:
        args.append("-x")
    c.run(f"{PY} -m pytest {' '.join(args)}", pty=False)


@task
def lint(c):
    """ruff over everything, mypy over host/."""
    c.run(f"{PY} -m ruff check host tests tasks.py examples toolchain setup.py")
    c.run(f"{PY} -m mypy")


@task(pre=[lint, test])
def ci(c):
    """What CI runs: lint, then the test suite."""


@task(help={"keep": "also keep the intermediate files (objects, call graphs, map) in this directory"})
def build_stub(c, keep=""):
    """Build the RAM stub (stub/ -> host/f4load/stub/f4load_stub.FLM, with f4load_stub.json saying what built
    it), check it, print the size report."""
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "toolchain"))
    import build_stub as builder

    print(builder.compiler_version())
    with tempfile.TemporaryDirectory(prefix="f4load-stub-") as tmp:
        result = builder.build(Path(keep) if keep else Path(tmp))
        installed = builder.install(result)
    print(builder.size_report(result))
    for path in installed:
        print(f"installed {path.relative_to(Path(__file__).resolve().parent)}")


@task(help={"link": "link model of the in-process route (default stlink-v2)",
            "stlink": "virtual ST-Links of the ST-Link route, comma-separated (default stlink-v2,stlink-v3; '' "
                      "for none)",
            "out": "markdown table to write (default docs/bench.md; '' for none)"})
def bench(c, link="stlink-v2", stlink="stlink-v2,stlink-v3", out="docs/bench.md"):
    """f4load vs pyocd vs OpenOCD on the virtual chip, through the virtual ST-Link (f4load-sim serve) and in
    process: 512 KB, re-flash, one sector."""
    from pathlib import Path

    from f4load import bench as benchmark
    from f4load import bench_stlink

    links = [name for name in stlink.split(",") if name]
    routes = []
    for name in links:
        print(f"through the virtual ST-Link {name}: 512 KB random image (seed {benchmark.SEED}), STM32F407VE, "
              "a fresh board per run")
        routes.append(bench_stlink.run_stlink_bench(name, benchmark.SEED, say=print))
    print(f"in process: 512 KB random image (seed {benchmark.SEED}), STM32F407VE, link {link}, a fresh virtual "
          "chip per run")
    result = benchmark.run_bench(link=link, say=print)
    for text, ok in result.checks + [check for route in routes for check in route.checks]:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    if out:
        path = Path(__file__).resolve().parent / out
        path.write_text(benchmark.markdown(result, routes))
        print(f"wrote {path.relative_to(Path(__file__).resolve().parent)}")
    if not result.passed or not all(route.passed for route in routes):
        sys.exit(1)


@task(help={"link": "link model of the virtual probe (default stlink-v2)"})
def demo(c, link="stlink-v2"):
    """Build examples/blinky.c, flash it twice onto a fresh virtual chip with `f4load`, then a 256 KB .hex."""
    import os
    import random
    import tempfile
    from pathlib import Path

    import bincopy

    from f4load.sim import state as sim_state

    root = Path(__file__).resolve().parent
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "f4load" / "demo-chip"
    sim_state.reset_state(cache)
    print(f"virtual chip (fresh, erased): {cache}")
    env = {"F4LOAD_SIM_STATE": str(cache), "F4LOAD_SIM_LINK": link}
    # f4load of the interpreter running this task (the venv's), never whatever `f4load` the PATH holds.
    f4load = f"{PY} -m f4load --probe sim"
    with tempfile.TemporaryDirectory(prefix="f4load-demo-") as tmp:
        elf = Path(tmp) / "blinky.elf"
        c.run(f"arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os -nostdlib -ffreestanding "
              f"-T {root / 'examples/blinky.ld'} {root / 'examples/blinky.c'} -o {elf}", echo=True)
        print("\n# first time: sector 0 is blank, so it is programmed without an erase")
        c.run(f"{f4load} {elf}", env=env, pty=True, echo=True)
        print("\n# the same file again: the sector's CRC matches, nothing is erased or programmed")
        c.run(f"{f4load} {elf}", env=env, pty=True, echo=True)
        # A larger sample (deterministic random bytes) in sectors 6-7, so the progress bar means something.
        sample = Path(tmp) / "sample-256k.hex"
        data = random.Random(407).randbytes(256 * 1024)
        hexfile = bincopy.BinFile()
        hexfile.add_binary(data, address=0x0804_0000)
        sample.write_text(hexfile.as_ihex())
        print("\n# a 256 KB Intel HEX at 0x08040000 (sectors 6 and 7)")
        c.run(f"{f4load} {sample}", env=env, pty=True, echo=True)


@task(help={"link": "link model of the virtual probe (default stlink-v2)",
            "size_kb": "image size in KB (default 512)"})
def bench_algo(c, link="stlink-v2", size_kb=512):
    """pyocd + f4load's stub versus pyocd + Keil's FLM: erase+program a random image on the virtual chip."""
    import io
    import os
    import random
    import tempfile
    from pathlib import Path

    from f4load.pyocd_targets import PAGE_SIZE, register_targets, stub_image

    stub = stub_image()
    print(f"f4load stub: {stub.code_size} bytes of code, {stub.data_size} bytes of data "
          f"({len(stub.image)} loaded), stack {stub.stack_need} bytes; pyocd page {PAGE_SIZE // 1024} KB, "
          f"2 page buffers")
    data = random.Random(407).randbytes(int(size_kb) * 1024)
    flash_kb = 512 if len(data) <= 512 * 1024 else 1024
    target = "f4load_stm32f407xe" if flash_kb == 512 else "f4load_stm32f407xg"
    register_targets()
    print(f"{len(data) // 1024} KB random image at 0x08000000, erased {flash_kb} KB chip, link {link}, "
          f"pyocd FileProgrammer with its default options, target {target}")

    def run(label, install=None):
        from pyocd.core.helpers import ConnectHelper
        from pyocd.flash.file_programmer import FileProgrammer

        with tempfile.TemporaryDirectory(prefix="f4load-bench-") as state:
            os.environ["F4LOAD_SIM_STATE"] = state
            os.environ["F4LOAD_SIM_FAULTS"] = f"flash={flash_kb}"
            session = ConnectHelper.session_with_chosen_probe(
                unique_id="f4sim", blocking=False, options={"f4sim.link": link, "target_override": target})
            if install is not None:
                install(session)
            with session:
                probe = session.probe
                start_ps, start_commands = probe.clock.now_ps, probe.commands
                FileProgrammer(session, progress=lambda _: None).program(
                    io.BytesIO(data), base_address=0x0800_0000, file_format="bin")
                seconds = (probe.clock.now_ps - start_ps) / 1e12
                commands = probe.commands - start_commands
                ok = bytes(session.target.read_memory_block8(0x0800_0000, len(data))) == data
        print(f"  {label:<28} {seconds:8.3f} s virtual {commands:7d} probe commands"
              f"  {'read back OK' if ok else 'READ BACK DIFFERS'}")
        return seconds

    saved = {k: os.environ.get(k) for k in ("F4LOAD_SIM_STATE", "F4LOAD_SIM_FAULTS")}
    try:
        ours = run("pyocd + f4load stub")
        peer = Path(os.environ.get("F4LOAD_PEER_FLM", str(Path(__file__).resolve().parent.parent / "shared" /
                                                            "peers" / "STM32F4xx_2048.FLM")))
        if peer.is_file():
            from f4load.sim.peer import use_flm

            theirs = run("pyocd + Keil STM32F4xx_2048", lambda session: use_flm(session, peer))
            print(f"  the Keil FLM takes {theirs / ours:.2f}x as long as the f4load stub ({theirs - ours:.3f} s more)")
        else:
            print(f"  pyocd + Keil STM32F4xx_2048: peer absent ({peer}); set F4LOAD_PEER_FLM")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
