"""Addresses as pure logic: which binds stay on this machine, and the host part of ZMQ endpoints and HTTP Hosts."""
from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """'127.0.0.1', '::1', '[::1]', 'localhost' → True; '', '0.0.0.0', '*', names and other addresses → False."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def zmq_host(endpoint: str) -> str | None:
    """The host of a tcp:// endpoint ('tcp://127.0.0.1:5555' → '127.0.0.1', 'tcp://*:5555' → '*'); None for
    ipc:// and inproc:// (local by construction)."""
    if not endpoint.startswith("tcp://"):
        return None
    host = endpoint[len("tcp://"):].rpartition(":")[0]
    return host.split(";")[-1]  # 'tcp://source;host:port' names the host last


def host_of(host_header: str) -> str:
    """The host name of an HTTP Host (or Origin netloc) value, lower case, without port or brackets."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h[1:]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h
