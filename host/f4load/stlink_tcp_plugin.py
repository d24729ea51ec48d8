"""The pyocd plugin entry point of the `stlink-tcp` probe (f4load/stlink_tcp.py): `pyocd.probe` in pyproject.toml.

pyocd imports it at start-up for every command; it imports only pyocd's Plugin class and f4load.stlink_tcp
(which imports nothing of pyocd until the probe class is asked for). Import it through pyocd only.
"""
from __future__ import annotations

from pyocd.core.plugin import Plugin

from f4load import stlink_tcp


class StlinkTcpProbePlugin(Plugin):
    """pyocd plugin entry point (`pyocd.probe`: stlink-tcp)."""

    def load(self) -> type:
        return stlink_tcp.probe_class()

    @property
    def name(self) -> str:
        return stlink_tcp.PROBE_TYPE

    @property
    def description(self) -> str:
        return "ST-Link through an ST-Link TCP server (f4load-sim serve, ST's stlink-server)"
