"""Allow entries: their spelling, what covers what (a child's list narrows its parent's),
and which addresses count as public, in every spelling an attacker might use."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from agentos import InvalidArgument, PermissionDenied
from agentos.egress.allowlist import Allowlist, is_public, parse_entry
from agentos.egress.policy import EgressPolicy, check_url


@pytest.mark.parametrize(("raw", "canonical"), [
    ("Example.COM.", "example.com"),
    ("example.com:8443", "example.com:8443"),
    ("*.Example.com:443", "*.example.com:443"),
    ("bücher.de", "xn--bcher-kva.de"),
    ("127.0.0.1", "127.0.0.1"),
    ("[::1]", "::1"),
    ("[::1]:8080", "[::1]:8080"),
    ("10.0.0.0/8:443", "10.0.0.0/8:443"),
    ("[fd00::/8]", "fd00::/8"),
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
])
def test_entries_are_canonical(raw: str, canonical: str) -> None:
    assert parse_entry(raw).text == canonical


@pytest.mark.parametrize("raw", [
    "", "*", "*.*.com", "a.*.com", "*example.com", "ex ample.com", "-a.com", "a" * 64 + ".com",
    "example.com:0", "example.com:65536", "example.com:http", "http://example.com", "example.com/path",
    "10.0.0.1/8", "127.1", "2130706433", "10.0.0.300", "0x7f.0.0.1", "[example.com]", "[::1", "[::1]x",
    "fe80::1%eth0", "x" * 400,
])
def test_malformed_entries_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_entry(raw)


@pytest.mark.parametrize(("parent", "child", "covered"), [
    ("example.com", "example.com", True),
    ("example.com", "example.com:8443", True),
    ("example.com:8443", "example.com:8443", True),
    ("example.com:8443", "example.com", False),
    ("example.com:8443", "example.com:443", False),
    ("example.com", "a.example.com", False),
    ("example.com", "*.example.com", False),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "a.b.example.com:443", True),
    ("*.example.com", "*.a.example.com", True),
    ("*.example.com", "*.example.com:443", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "badexample.com", False),
    ("*.example.com", "*.com", False),
    ("*.example.com:443", "a.example.com", False),
    ("10.0.0.0/8", "10.1.2.3", True),
    ("10.0.0.0/8", "10.1.0.0/16:5432", True),
    ("10.0.0.0/8", "::ffff:10.0.0.1", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    ("10.0.0.0/8", "0.0.0.0/0", False),
    ("fd00::/8", "fd12::1", True),
    ("fd00::/8", "fe80::1", False),
    ("fd00::/8", "10.0.0.1", False),
    # A name never covers an address: a child cannot add an address exception.
    ("example.com", "93.184.216.34", False),
    ("example.com", "127.0.0.1", False),
    ("*.example.com", "10.0.0.0/8", False),
    ("127.0.0.1", "localhost", False),
])
def test_coverage(parent: str, child: str, covered: bool) -> None:
    assert parse_entry(parent).covers(parse_entry(child)) is covered


@pytest.mark.parametrize(("allow", "url", "permitted"), [
    (["example.com"], "http://EXAMPLE.com./x", True),
    (["example.com"], "http://example.com:8443/", True),
    (["example.com:8443"], "http://example.com/", False),
    (["*.example.com:443"], "https://a.example.com/", True),
    (["*.example.com:443"], "http://a.example.com/", False),
    (["*.example.com"], "http://notexample.com/", False),
    (["*.example.com"], "http://example.com/", False),
    (["example.com"], "http://example.com.evil.test/", False),
    (["example.com"], "http://evil.test#@example.com/", False),
    (["xn--bcher-kva.de"], "http://Bücher.de/", True),
    (["[::1]:8080"], "http://[::1]:8080/", True),
    (["127.0.0.1"], "http://[::ffff:127.0.0.1]/", True),
    (["127.0.0.1"], "http://127.0.0.1./", True),
    (["127.0.0.1"], "http://localhost/", False),
    (["127.0.0.1"], "http://127.1/", False),
    (["127.0.0.1"], "http://2130706433/", False),
    (["example.com"], "http://93.184.216.34/", False),
    (["10.0.0.0/8"], "http://10.9.8.7/", True),
])
def test_the_name_check(allow: list[str], url: str, permitted: bool) -> None:
    assert Allowlist.parse(allow, "allow").permits_host(URL(url)) is permitted


INTERNAL = [
    "127.0.0.1", "127.255.0.9", "169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fe80::1%1", "fc00::1", "fd12:3456::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::7f00:1",
    "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b:1::1", "2002:7f00:1::1", "2002:a9fe:a9fe::", "2001::1",
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", INTERNAL)
def test_internal_addresses_are_not_public(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not is_public(ip)
    assert not Allowlist.parse(["example.com", "*.example.com"], "allow").permits_address(ip, 80)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_an_internal_address_is_permitted_only_as_listed() -> None:
    allow = Allowlist.parse(["internal.test", "127.0.0.1:8080", "10.0.0.0/8", "fd00::/8"], "allow")
    assert allow.permits_address(ipaddress.ip_address("127.0.0.1"), 8080)
    assert allow.permits_address(ipaddress.ip_address("::ffff:127.0.0.1"), 8080)
    assert not allow.permits_address(ipaddress.ip_address("127.0.0.1"), 8081)
    assert not allow.permits_address(ipaddress.ip_address("127.0.0.2"), 8080)
    assert allow.permits_address(ipaddress.ip_address("10.200.0.1"), 1)
    assert allow.permits_address(ipaddress.ip_address("64:ff9b::a00:1"), 1), "NAT64 of 10.0.0.1"
    assert allow.permits_address(ipaddress.ip_address("fd00::5"), 1)
    assert not allow.permits_address(ipaddress.ip_address("169.254.169.254"), 80)


def test_narrowing() -> None:
    parent = Allowlist.parse(["*.example.com", "api.test:443", "10.0.0.0/8"], "allow")
    child = parent.narrow(["A.example.com", "api.test:443", "a.example.com.", "10.1.0.0/16"], "egress")
    assert child.texts == ("a.example.com", "api.test:443", "10.1.0.0/16")
    for wider in ["example.com", "api.test", "api.test:80", "127.0.0.1", "10.0.0.0/7", "*.com"]:
        with pytest.raises(PermissionDenied) as info:
            parent.narrow(["a.example.com", wider], "egress")
        assert info.value.details == {"field": "egress", "entry": parse_entry(wider).text}
    with pytest.raises(PermissionDenied, match="parent may reach \\(nothing\\)"):
        Allowlist().narrow(["example.com"], "egress")
    assert Allowlist().narrow([], "egress").texts == ()


@pytest.mark.parametrize(("raw", "field"), [
    ("example.com", "egress"), ({"example.com": 1}, "egress"), (["ok.com", 5], "egress[1]"),
    (["ok.com", "bad host"], "egress[1]"), ([None], "egress[0]"), (["a.com"] * 257, "egress"),
])
def test_malformed_lists_are_invalid_arguments(raw: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Allowlist.parse(raw, "egress")
    assert info.value.details == {"field": field}


def test_kernel_section_refuses_malformed_entries() -> None:
    assert EgressPolicy.from_section({"allow": ["Example.com", "example.com"]}).allow.texts == ("example.com",)
    with pytest.raises(ValueError, match=r"egress.allow\[1\]"):
        EgressPolicy.from_section({"allow": ["example.com", "http://example.com/"]})


@pytest.mark.parametrize(("url", "error"), [
    ("", InvalidArgument), (5, InvalidArgument), ("ftp://example.com/", InvalidArgument),
    ("http://user:pw@example.com/", InvalidArgument), ("http:///nohost", InvalidArgument),
    ("http://example.com:99999/", InvalidArgument), ("http://\udfff/", InvalidArgument),
    ("http://XN--/", InvalidArgument), ("http://[]::1@/x", InvalidArgument),
    ("http://other.test/", PermissionDenied),
])
def test_check_url_refusals(url: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_url(url, Allowlist.parse(["example.com"], "allow"))


# --- properties over arbitrary input ---------------------------------------------------


_PIECES = st.sampled_from(["example.com", "*.", "a", ".", ":", "443", "[", "]", "::1", "/", "8", "10.0.0.0",
                           "ffff", "%", "xn--", "ü", "-", "_", " ", "\x00", "\udfff", "0x7f", "1" * 6])
_ENTRYISH = st.one_of(st.text(max_size=40), st.lists(_PIECES, max_size=8).map("".join))


@settings(max_examples=500, deadline=None)
@given(_ENTRYISH)
def test_any_text_is_an_entry_or_a_value_error_and_canonical_forms_are_stable(raw: str) -> None:
    try:
        entry = parse_entry(raw)
    except ValueError:
        return
    again = parse_entry(entry.text)
    assert again == entry, "the canonical spelling reads back as the same entry"
    assert entry.covers(entry)


@settings(max_examples=300, deadline=None)
@given(_ENTRYISH, st.sampled_from(["http://", "https://", "ftp://", ""]))
def test_any_url_is_checked_without_an_internal_error(host: str, scheme: str) -> None:
    try:
        check_url(f"{scheme}{host}/x", Allowlist.parse(["example.com", "127.0.0.1", "*.a"], "allow"))
    except (InvalidArgument, PermissionDenied):
        pass
