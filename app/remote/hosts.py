"""Which host names and addresses name this machine, for the distinctness checks of
databases and object stores (app.config.remote_overlaps).

Erring towards "this machine" is the safe side there: a false "same" is a refusal that a
setting fixes, a false "different" lets two profiles share production's database or bucket.
No name is looked up: a check made at every load cannot wait on DNS.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

__all__ = ["is_this_machine"]

# The names a resolver answers with a loopback address by convention (RFC 6761 reserves
# every name under .localhost; Debian's /etc/hosts adds the ip6- ones).
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_NUMERIC = frozenset("0123456789abcdefx.")


def is_this_machine(host: str) -> bool:
    """Whether ``host`` (a name or an address, as written in a URL or a libpq ``host``)
    reaches this machine: a loopback or unspecified address in any spelling libc accepts
    (``127.1``, ``2130706433``, ``0x7f000001``, ``0.0.0.0``, ``[::ffff:127.0.0.1]``), a
    loopback name (with a trailing dot, under ``.localhost``), or this machine's own name.

    Red team 39: each of those reached the suite's cluster on 127.0.0.1, and each was
    another database than ``localhost`` to the overlap check.
    """
    name = host.strip().strip("[]").rstrip(".").lower()
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return True
    if name == socket.gethostname().lower():
        return True
    address = _address(name)
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified or address in own_addresses()


#: Where Linux lists the machine's own addresses: IPv4's local routes, IPv6's addresses.
_FIB_TRIE = Path("/proc/net/fib_trie")
_IF_INET6 = Path("/proc/net/if_inet6")


def own_addresses() -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses of this machine's own interfaces (``192.0.2.2``, ``fd00::2``), read
    from ``/proc`` (no lookup; empty elsewhere). Read at each call: they change (DHCP).

    A server that listens on every address (PostgreSQL's ``listen_addresses = '*'``, a
    store on ``0.0.0.0``) is reached by them as by ``127.0.0.1``: production's
    ``postgresql://10.0.0.5/app`` and staging's ``postgresql://localhost/app``, on that
    machine, were one database to it and two to the overlap check (red team 52).
    """
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    try:
        last = ""
        for line in _FIB_TRIE.read_text().splitlines():
            text = line.strip()
            if text.startswith("|-- "):
                last = text[4:]
            elif text == "/32 host LOCAL" and last:
                found.add(ipaddress.IPv4Address(last))
    except (OSError, ValueError):
        pass
    try:
        for line in _IF_INET6.read_text().splitlines():
            found.add(ipaddress.IPv6Address(int(line.split()[0], 16)))
    except (OSError, ValueError, IndexError):
        pass
    return frozenset(found)


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        pass
    # libc's inet_aton, which libpq's and the S3 client's resolvers use, also takes the
    # shorthand and whole-number forms (127.1, 2130706433, 0x7f000001).
    if not name or not set(name) <= _NUMERIC:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        return None
