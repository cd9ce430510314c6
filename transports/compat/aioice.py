"""aioice's private API the WebRTC viewers use (checked for aioice >=0.9,<0.14): which local addresses give host
candidates. aioice gathers on every interface but loopback and offers no per-connection setting, so a daemon
serving on loopback (the default) replaces `aioice.ice.get_host_addresses`, process-wide, with a filter over
the addresses given. Only removing candidates could be done in the SDP instead; adding loopback ones cannot.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import aioice
import aioice.ice

from common.versions import check_version

LOWEST, BELOW = "0.9", "0.14"

_addresses: list[str] | None = None
_original = None


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _addresses is None:
        return _original(use_ipv4, use_ipv6)
    return [a for a in _addresses if (use_ipv6 if ":" in a else use_ipv4)]


def restrict_host_addresses(addresses: Sequence[str] | None) -> None:
    """Gather host candidates on these local addresses only (None: aioice's default, every interface but
    loopback)."""
    global _addresses, _original
    if _original is None:
        _original = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _host_addresses
    _addresses = None if addresses is None else [str(a) for a in addresses]


def self_test() -> None:
    """RuntimeError naming what does not match; run once at start."""
    check_version("aioice", aioice.__version__, LOWEST, BELOW)
    fn = _original or aioice.ice.get_host_addresses
    if list(inspect.signature(fn).parameters) != ["use_ipv4", "use_ipv6"]:
        raise RuntimeError("aioice: ice.get_host_addresses(use_ipv4, use_ipv6) changed")
    if "get_host_addresses(" not in inspect.getsource(aioice.ice.Connection):
        raise RuntimeError("aioice: Connection no longer gathers through ice.get_host_addresses")
