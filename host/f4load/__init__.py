"""f4load: fast, truthful programming of STM32F405/407/415/417 over SWD.

    import f4load

    result = f4load.program("app.hex", probe="sim")   # "auto" (default: the one probe attached), "sim:NAME", a uid
    print(result)            # one line: probe, part, unique ID, what was erased/programmed/verified
    result.unique_id         # "35001f000731304d49533446"

    try:
        f4load.program("app.bin", probe="066DFF...")
    except f4load.F4LoadError as error:
        print(error, "exit status", error.exit_code)

    with f4load.Session(probe="sim") as session:    # several operations on one connection
        session.program(f4load.load_image("app.hex"))
        session.verify(f4load.load_image("app.hex"))

The names below are imported when first used (PEP 562), so `import f4load` (and `f4load --help`) does not load
pyocd or Unicorn. docs/api.md describes them.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List

__version__ = "0.1.0"

_EXPORTS: Dict[str, str] = {
    # one call per operation (f4load.api)
    "program": "f4load.api",
    "verify": "f4load.api",
    "erase": "f4load.api",
    "list_probes": "f4load.api",
    "Result": "f4load.api",
    # the pieces
    "Session": "f4load.session",
    "Outcome": "f4load.session",
    "TargetInfo": "f4load.identity",
    "load_image": "f4load.image",
    "Image": "f4load.image",
    "ProbeInfo": "f4load.probes",
    # errors: every one has `exit_code`, the command line's exit status for it
    "F4LoadError": "f4load.errors",
    "SessionError": "f4load.errors",
    "UsageError": "f4load.errors",
    "ConnectError": "f4load.errors",
    "TargetIdentityError": "f4load.errors",
    "ProtectionError": "f4load.errors",
    "OptionBytesError": "f4load.errors",
    "LinkError": "f4load.errors",
    "VerifyError": "f4load.errors",
    "StubError": "f4load.errors",
    "DeclinedError": "f4load.errors",
    "ImageError": "f4load.image",
    "exit_status": "f4load.exit_status",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'f4load' has no attribute {name!r}")
    value = importlib.import_module(module) if name == "exit_status" else getattr(importlib.import_module(module),
                                                                                  name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(__all__)
