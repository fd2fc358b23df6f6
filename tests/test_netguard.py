"""The SSRF guard's decision, tested without fetching anything: IP literals and injected resolvers only.

No test here sends a packet: literal addresses are classified in-process, and
host names go through a fake resolver (a dict), never DNS.
"""

from __future__ import annotations

import pytest

from provenance.crawlers.netguard import RefusedAddress, address_problem, check_url


def fake_resolver(table: dict[str, list[str]]):
    calls = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return table[host]

    resolve.calls = calls
    return resolve


def no_resolver(host, port):
    raise AssertionError(f"an IP literal must not be resolved (asked for {host})")


@pytest.mark.parametrize("url, words", [
    ("http://10.0.0.1/admin", "10.0.0.1 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://127.0.0.1:8080/", "127.0.0.1 is a loopback address"),
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://100.64.0.1/", "non-public"),          # carrier-grade NAT
    ("http://[::ffff:10.0.0.1]/", "private"),      # IPv4-mapped IPv6 is the IPv4 address
])
def test_private_addresses_are_refused_by_default(url, words):
    with pytest.raises(RefusedAddress) as info:
        check_url(url, allow_private=False, resolver=no_resolver)
    message = str(info.value)
    assert message.startswith(f"refused {url}: ")
    assert words in message
    assert "--allow-private" in message  # says how to opt in


@pytest.mark.parametrize("url, words", [
    ("http://0.0.0.0/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
])
def test_unspecified_multicast_and_reserved_are_refused_even_with_allow_private(url, words):
    with pytest.raises(RefusedAddress) as info:
        check_url(url, allow_private=True, resolver=no_resolver)
    assert words in str(info.value)
    assert "--allow-private" not in str(info.value)  # no opt-in exists for these


def test_allow_private_opts_in_to_private_loopback_and_link_local():
    for url in ("http://10.0.0.1/", "http://127.0.0.1:8000/", "http://169.254.169.254/", "http://[::1]/"):
        assert check_url(url, allow_private=True, resolver=no_resolver)


def test_a_name_resolving_to_loopback_is_refused_after_resolution():
    resolve = fake_resolver({"intranet.example": ["127.0.0.1"]})
    with pytest.raises(RefusedAddress) as info:
        check_url("http://intranet.example/", resolver=resolve)
    assert str(info.value).startswith(
        "refused http://intranet.example/: intranet.example resolves to 127.0.0.1, which is a loopback address")
    assert resolve.calls == [("intranet.example", 80)]


def test_one_forbidden_address_among_several_refuses_the_name():
    # DNS may answer with several addresses and the connection may use any of them.
    resolve = fake_resolver({"mixed.example": ["93.184.216.34", "10.1.2.3"]})
    with pytest.raises(RefusedAddress, match="10.1.2.3, which is a private address"):
        check_url("https://mixed.example/", resolver=resolve)
    assert resolve.calls == [("mixed.example", 443)]


def test_public_addresses_pass_and_are_returned():
    resolve = fake_resolver({"www.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]})
    assert check_url("http://www.example:8080/a", resolver=resolve) == ["93.184.216.34",
                                                                       "2606:2800:220:1:248:1893:25c8:1946"]
    assert check_url("http://8.8.8.8/", resolver=no_resolver) == ["8.8.8.8"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://10.0.0.1/x", "gopher://127.0.0.1:6379/", "data:,x"])
def test_only_http_and_https_are_fetched(url):
    with pytest.raises(RefusedAddress, match="only http and https"):
        check_url(url, allow_private=True, resolver=no_resolver)


def test_unresolvable_names_are_not_refusals():
    def failing(host, port):
        raise OSError("Name or service not known")

    with pytest.raises(OSError):  # the fetch then fails as a DNS error; it is not a refusal
        check_url("http://nowhere.invalid/", resolver=failing)


def test_address_problem_is_what_the_resolver_layer_uses():
    assert address_problem("10.0.0.1") == "10.0.0.1 is a private address"
    assert address_problem("10.0.0.1", allow_private=True) is None
    assert address_problem("93.184.216.34") is None


def test_the_resolver_layer_refuses_what_a_name_re_resolves_to():
    """GuardedResolver checks the address Twisted will connect to (a DNS-rebinding defence)."""
    from provenance.crawlers.middlewares import GuardedResolver, RefusedLookup

    resolver = GuardedResolver.__new__(GuardedResolver)  # only its check, no reactor needed
    resolver.allow_private = False
    with pytest.raises(RefusedLookup, match="rebind.example resolved to 10.0.0.7 is a private address"):
        resolver._check("10.0.0.7", "rebind.example")
    assert resolver._check("93.184.216.34", "www.example") == "93.184.216.34"
    resolver.allow_private = True
    assert resolver._check("127.0.0.1", "localhost") == "127.0.0.1"
