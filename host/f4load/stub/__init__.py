"""The built RAM stub, shipped with the package (do not edit: `invoke build-stub` writes these files).

- `f4load_stub.FLM`: the position-independent stub; an ELF that is also a CMSIS-Pack flash algorithm.
- `f4load_protocol.h`: the protocol header it was built with (a copy of stub/f4load_protocol.h), read by
  f4load.protocol through cffi.

Sources: stub/ and toolchain/ at the top of the repository; docs/stub.md explains the contract.
"""
