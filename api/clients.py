"""Who a request comes from, as the limits count callers: pure, so it is tested without a
server."""

from __future__ import annotations

import ipaddress

#: An IPv6 network of this size is one subscriber's: a single host can use any of its addresses.
IPV6_PREFIX = 64


def client_id(address: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64 network, since one host may rotate
    through all of it; an IPv4-mapped IPv6 address as the IPv4 address it maps; anything that
    is not an address (a Unix socket's peer, say) as the string itself."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(parsed), IPV6_PREFIX), strict=False))
    return str(parsed)
