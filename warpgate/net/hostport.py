"""``host:port`` text for an address, as servers are written in conf and in messages."""

from __future__ import annotations


def format_hostport(host: str, port: int) -> str:
    """``host:port``; an IPv6 address goes in brackets (``[::1]:3478``), so the last
    colon still separates the port."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
