"""The SSRF guard's decision: may the crawler connect to this URL's host? Pure, no Scrapy, no I/O of its own.

A crawl fed by untrusted input (a URL list, a sitemap, a redirect from a public
page) must not be turned against the machine it runs on or its network: cloud
metadata at 169.254.169.254, an admin panel on 10.0.0.1, a service on
127.0.0.1. The check runs on the addresses a host name *resolves to*, not on
its spelling, so ``http://2130706433/`` or a DNS name pointing at 127.0.0.1
are caught too. The only I/O is the resolver, which callers (and tests) can
replace.

``check_url`` is called by ``middlewares.NetGuardMiddleware`` before every
request and ``address_problem`` by ``middlewares.GuardedResolver`` on the
address Twisted is about to connect to (which closes the DNS-rebinding gap
between the check and the connection).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("http", "https")

# host, port -> addresses (strings). The default asks the system resolver (getaddrinfo).
Resolver = Callable[[str, int], Iterable[str]]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(Exception):
    """A URL the crawler will not fetch; the message says why and how to opt in when one can."""

    def __init__(self, url: str, reason: str, address: str | None = None, can_opt_in: bool = False):
        self.url, self.reason, self.address, self.can_opt_in = url, reason, address, can_opt_in
        message = f"refused {url}: {reason}"
        if can_opt_in:
            message += " (pass --allow-private, or set crawl.allow_private = true, to crawl it)"
        super().__init__(message)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address getaddrinfo gives for host (IPv4 and IPv6), as strings."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def parse_ip(value: str) -> IPAddress | None:
    """An IP address object, or None when ``value`` is a host name. IPv6 zone ids ('%eth0') are dropped."""
    try:
        return ipaddress.ip_address(value.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None


def address_kind(ip: IPAddress | str, allow_private: bool = False) -> str | None:
    """What kind of forbidden address ``ip`` is ('a private address', ...), or None when it may be crawled.

    Unspecified, multicast and reserved addresses are always refused: no web
    server lives there. Loopback, link-local, private and other non-public
    (special-purpose) addresses are refused unless ``allow_private``.
    """
    if isinstance(ip, str):
        parsed = parse_ip(ip)
        if parsed is None:
            return "not an IP address"
        ip = parsed
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_loopback:
        kind = "a loopback address"
    elif ip.is_link_local:
        kind = "a link-local address, where cloud metadata services live"
    elif ip.is_reserved:
        return "a reserved address"
    elif ip.is_private:
        kind = "a private address"
    elif not ip.is_global:
        kind = "a non-public (special-purpose) address"
    else:
        return None
    return None if allow_private else kind


def address_problem(ip: IPAddress | str, allow_private: bool = False) -> str | None:
    """'10.0.0.1 is a private address', or None when the crawler may connect to ``ip``."""
    kind = address_kind(ip, allow_private)
    return None if kind is None else f"{ip} is {kind}"


def check_url(url: str, allow_private: bool = False, resolver: Resolver | None = None) -> list[str]:
    """Return the addresses ``url``'s host resolves to, or raise RefusedAddress.

    Every address must pass: a name resolving to one public and one private
    address is refused, since the connection may use either. A name that does
    not resolve raises ``socket.gaierror`` (the fetch then fails as a DNS error,
    it is not a refusal).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedAddress(url, f"malformed URL ({exc})") from None
    if parts.scheme not in ALLOWED_SCHEMES:
        raise RefusedAddress(url, f"scheme {parts.scheme or '(none)'!r} is not crawled; only http and https are")
    host = parts.hostname
    if not host:
        raise RefusedAddress(url, "URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    literal = parse_ip(host)
    addresses = [str(literal)] if literal is not None else list((resolver or system_resolver)(host, port))
    for address in addresses:
        kind = address_kind(address, allow_private)
        if kind is not None:
            reason = f"{address} is {kind}" if literal is not None else \
                f"{host} resolves to {address}, which is {kind}"
            opt_in = address_kind(address, allow_private=True) is None
            raise RefusedAddress(url, reason, address=address, can_opt_in=opt_in)
    return addresses
