"""Validation of domain values: key specs, subjects, subject alternative names, object names."""

from __future__ import annotations

import pytest

from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import (
    DEFAULT_KEY_SPEC,
    KeySpec,
    SanKind,
    SubjectAltName,
    check_name,
    is_dns_name,
    make_sans,
    make_subject,
)

SUPPORTED_SPECS = ("rsa:2048", "rsa:3072", "rsa:4096", "ec:p256", "ec:p384", "ec:p521")


# --- KeySpec ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "algorithm", "size", "curve", "canonical"),
    [
        ("rsa:2048", "rsa", 2048, None, "rsa:2048"),
        ("rsa:3072", "rsa", 3072, None, "rsa:3072"),
        ("rsa:4096", "rsa", 4096, None, "rsa:4096"),
        ("ec:p256", "ec", None, "p256", "ec:p256"),
        ("ec:p384", "ec", None, "p384", "ec:p384"),
        ("ec:p521", "ec", None, "p521", "ec:p521"),
        ("RSA:2048", "rsa", 2048, None, "rsa:2048"),
        ("EC:P384", "ec", None, "p384", "ec:p384"),
        ("  ec:p256\n", "ec", None, "p256", "ec:p256"),
    ],
    ids=["rsa2048", "rsa3072", "rsa4096", "p256", "p384", "p521", "upper-rsa", "upper-ec", "surrounding-space"],
)
def test_key_spec_parse_accepts(text, algorithm, size, curve, canonical):
    spec = KeySpec.parse(text)
    assert (spec.algorithm, spec.size, spec.curve) == (algorithm, size, curve)
    assert str(spec) == canonical
    assert KeySpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        "rsa",
        "rsa:",
        "rsa:1024",
        "rsa:8192",
        "rsa:2048.0",
        "rsa:-2048",
        "rsa:²⁰⁴⁸",
        "ec",
        "ec:p192",
        "ec:secp256r1",
        "ec:256",
        "ed25519",
        "dsa:2048",
        "p256",
        "rsa:2048:extra",
    ],
    ids=[
        "empty",
        "none",
        "rsa-no-size",
        "rsa-empty-size",
        "rsa-too-small",
        "rsa-too-large",
        "rsa-decimal",
        "rsa-negative",
        "rsa-superscript-digits",
        "ec-no-curve",
        "ec-p192",
        "ec-openssl-name",
        "ec-bare-number",
        "ed25519",
        "dsa",
        "curve-without-algorithm",
        "trailing-junk",
    ],
)
def test_key_spec_parse_rejects_with_supported_list(text):
    with pytest.raises(InvalidInput) as info:
        KeySpec.parse(text)
    assert info.value.field == "key"
    for spec in SUPPORTED_SPECS:
        assert spec in str(info.value)


def test_default_key_spec_is_ec_p256():
    assert str(DEFAULT_KEY_SPEC) == "ec:p256"


# --- make_subject ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"common_name": "web1.example.com"}, {"common_name": "web1.example.com"}),
        ({"common_name": "  web1  "}, {"common_name": "web1"}),
        ({"common_name": "web1", "country": "de"}, {"country": "DE"}),
        ({"common_name": "web1", "country": " us "}, {"country": "US"}),
        ({"common_name": "web1", "organization": ""}, {"organization": None}),
        ({"common_name": "web1", "organizational_unit": "   "}, {"organizational_unit": None}),
        ({"common_name": "web1", "country": ""}, {"country": None}),
        ({"common_name": "web1", "email_address": "ops@example.com"}, {"email_address": "ops@example.com"}),
        ({"common_name": "web1", "email_address": ""}, {"email_address": None}),
        ({"common_name": "x" * 60 + ".com"}, {"common_name": "x" * 60 + ".com"}),
        ({"common_name": "web1", "organization": "o" * 64}, {"organization": "o" * 64}),
        ({"common_name": "web1", "locality": "l" * 128}, {"locality": "l" * 128}),
        ({"common_name": "web1", "state": "s" * 128}, {"state": "s" * 128}),
        ({"common_name": "web1", "organization": "Müller GmbH"}, {"organization": "Müller GmbH"}),
        (
            {
                "common_name": "web1",
                "organization": "Example",
                "organizational_unit": "Ops",
                "locality": "Berlin",
                "state": "Berlin",
                "country": "DE",
                "email_address": "a@b.co",
            },
            {"organization": "Example", "organizational_unit": "Ops", "locality": "Berlin", "state": "Berlin"},
        ),
    ],
    ids=[
        "cn-only",
        "cn-stripped",
        "country-upper-cased",
        "country-stripped-and-upper-cased",
        "empty-org-is-absent",
        "blank-ou-is-absent",
        "empty-country-is-absent",
        "email-kept",
        "empty-email-is-absent",
        "cn-at-64-limit",
        "org-at-64-limit",
        "locality-at-128-limit",
        "state-at-128-limit",
        "non-ascii-allowed-in-org",
        "all-fields",
    ],
)
def test_make_subject_accepts(kwargs, expected):
    subject = make_subject(**kwargs)
    as_dict = subject.as_dict()
    for key, value in expected.items():
        assert as_dict[key] == value
    assert set(as_dict) == set(subject.FIELDS)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"common_name": ""}, "common_name"),
        ({"common_name": "   "}, "common_name"),
        ({"common_name": None}, "common_name"),
        ({"common_name": "x" * 65}, "common_name"),
        ({"common_name": "web1", "organization": "o" * 65}, "organization"),
        ({"common_name": "web1", "organizational_unit": "u" * 65}, "organizational_unit"),
        ({"common_name": "web1", "locality": "l" * 129}, "locality"),
        ({"common_name": "web1", "state": "s" * 129}, "state"),
        ({"common_name": "web1", "email_address": "a@" + "b" * 126 + ".c"}, "email_address"),
        ({"common_name": "web1", "country": "DEU"}, "country"),
        ({"common_name": "web1", "country": "D"}, "country"),
        ({"common_name": "web1", "country": "D1"}, "country"),
        ({"common_name": "web1", "country": "ÄÖ"}, "country"),
        ({"common_name": "web1", "email_address": "ops"}, "email_address"),
        ({"common_name": "web1", "email_address": "ops@example"}, "email_address"),
        ({"common_name": "web1", "email_address": "o ps@example.com"}, "email_address"),
        ({"common_name": "web1", "email_address": "a@b@example.com"}, "email_address"),
        ({"common_name": "web1", "email_address": "jörg@example.com"}, "email_address"),
        ({"common_name": "web\x001"}, "common_name"),
        ({"common_name": "web\n1"}, "common_name"),
        ({"common_name": "web1", "organization": "Ex\tample"}, "organization"),
        ({"common_name": "web1", "locality": "Ber\x1blin"}, "locality"),
        ({"common_name": "web\x7f1"}, "common_name"),
        ({"common_name": "web\x851"}, "common_name"),
    ],
    ids=[
        "cn-empty",
        "cn-blank",
        "cn-none",
        "cn-over-64",
        "org-over-64",
        "ou-over-64",
        "locality-over-128",
        "state-over-128",
        "email-over-128",
        "country-three-letters",
        "country-one-letter",
        "country-digit",
        "country-non-ascii",
        "email-no-at",
        "email-no-dot-in-domain",
        "email-with-space",
        "email-two-ats",
        "email-non-ascii-not-ia5",
        "cn-nul",
        "cn-newline",
        "org-tab",
        "locality-escape",
        "cn-delete-char",
        "cn-c1-next-line",
    ],
)
def test_make_subject_rejects_naming_the_field(kwargs, field):
    with pytest.raises(InvalidInput) as info:
        make_subject(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(
    "common_name",
    ["bad cn!", "web 1.example.test", "Legacy Device", "web1.example.test/x", "-web.example.test",
     "web..example.test", "*.*.example.test", "ex*mple.test", "Müller GmbH Server"],
)
def test_a_common_name_must_be_a_dns_name_or_an_ip_address(common_name):
    with pytest.raises(InvalidInput) as info:
        make_subject(common_name)
    assert info.value.field == "common_name"
    assert "neither a DNS name" in str(info.value) and repr(common_name) in str(info.value)


@pytest.mark.parametrize("common_name", ["web1.example.test", "*.example.test", "localhost", "10.0.0.5", "2001:db8::1",
                                         "xn--bcher-kva.example"])
def test_dns_names_wildcards_and_ip_addresses_are_common_names(common_name):
    assert make_subject(common_name).common_name == common_name


# --- SubjectAltName.parse ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("DNS:web1.example.com", SanKind.DNS, "web1.example.com"),
        ("dns:web1.example.com", SanKind.DNS, "web1.example.com"),
        ("Dns: Web1.Example.COM ", SanKind.DNS, "web1.example.com"),
        ("DNS:web1.example.com.", SanKind.DNS, "web1.example.com"),
        ("DNS:*.example.com", SanKind.DNS, "*.example.com"),
        ("DNS:localhost", SanKind.DNS, "localhost"),
        ("DNS:xn--bcher-kva.example", SanKind.DNS, "xn--bcher-kva.example"),
        ("DNS:" + "a" * 63 + ".example.com", SanKind.DNS, "a" * 63 + ".example.com"),
        ("web1.example.com", SanKind.DNS, "web1.example.com"),
        ("*.Example.com", SanKind.DNS, "*.example.com"),
        ("IP:10.0.0.1", SanKind.IP, "10.0.0.1"),
        ("ip:10.0.0.1", SanKind.IP, "10.0.0.1"),
        ("IP:2001:DB8::0001", SanKind.IP, "2001:db8::1"),
        ("IP:::1", SanKind.IP, "::1"),
        ("192.168.1.10", SanKind.IP, "192.168.1.10"),
        ("fe80::1", SanKind.IP, "fe80::1"),
        ("::1", SanKind.IP, "::1"),
        ("EMAIL:ops@example.com", SanKind.EMAIL, "ops@example.com"),
        ("email:ops@example.com", SanKind.EMAIL, "ops@example.com"),
        ("ops@example.com", SanKind.EMAIL, "ops@example.com"),
        ("URI:https://example.com/path", SanKind.URI, "https://example.com/path"),
        ("uri:spiffe://cluster.local/ns/default/sa/web", SanKind.URI, "spiffe://cluster.local/ns/default/sa/web"),
        ("URI:urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", SanKind.URI, "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
        ("https://example.com/", SanKind.URI, "https://example.com/"),
    ],
    ids=[
        "dns-prefix",
        "dns-prefix-lower",
        "dns-prefix-mixed-case-value-lowered",
        "dns-trailing-dot-dropped",
        "dns-wildcard-first-label",
        "dns-single-label",
        "dns-punycode",
        "dns-63-char-label",
        "bare-dns",
        "bare-wildcard",
        "ip-prefix",
        "ip-prefix-lower",
        "ipv6-normalised",
        "ipv6-loopback-with-prefix",
        "bare-ipv4",
        "bare-ipv6",
        "bare-ipv6-loopback",
        "email-prefix",
        "email-prefix-lower",
        "bare-email",
        "uri-prefix",
        "uri-prefix-lower",
        "uri-urn",
        "bare-uri",
    ],
)
def test_san_parse_accepts(text, kind, value):
    san = SubjectAltName.parse(text)
    assert (san.kind, san.value) == (kind, value)
    assert str(san) == f"{kind.value}:{value}"
    assert SubjectAltName.parse(str(san)) == san


@pytest.mark.parametrize(
    "text",
    [
        "",
        "DNS:",
        "DNS:a.*.example.com",
        "DNS:*.*.example.com",
        "DNS:foo*.example.com",
        "DNS:*",
        "DNS:*.",
        "DNS:-web.example.com",
        "DNS:web-.example.com",
        "DNS:web..example.com",
        "DNS:web_1.example.com",
        "DNS:web 1.example.com",
        "DNS:" + "a" * 64 + ".example.com",
        "DNS:" + ".".join(["a" * 63] * 4),
        "DNS:bücher.example",
        "DNS:a\n.example.com",
        "web1.example.com/path",
        "IP:10.0.0.256",
        "IP:10.0.0.1/24",
        "IP:web1.example.com",
        "IP:",
        "EMAIL:ops",
        "EMAIL:ops@example",
        "EMAIL:o ps@example.com",
        "URI:",
        "URI:example.com",
        "URI:https://exa mple.com/",
        "a@b",
    ],
    ids=[
        "empty",
        "dns-empty-value",
        "wildcard-not-first-label",
        "double-wildcard",
        "partial-wildcard",
        "wildcard-only",
        "wildcard-empty-rest",
        "label-leading-hyphen",
        "label-trailing-hyphen",
        "empty-label",
        "underscore",
        "space",
        "label-over-63",
        "name-over-253",
        "unencoded-idn",
        "embedded-newline",
        "bare-with-slash",
        "ip-octet-over-255",
        "ip-with-prefix-length",
        "ip-prefix-with-hostname",
        "ip-empty-value",
        "email-no-at",
        "email-no-dot-in-domain",
        "email-with-space",
        "uri-empty",
        "uri-no-scheme",
        "uri-with-space",
        "bare-email-no-dot",
    ],
)
def test_san_parse_rejects(text):
    with pytest.raises(InvalidInput) as info:
        SubjectAltName.parse(text)
    assert info.value.field == "subject_alt_names"
    assert text.strip() in str(info.value) or repr(text.strip())[1:-1] in str(info.value)


# --- make_sans ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("common_name", "sans", "add_cn", "expected"),
    [
        ("web1.example.com", [], True, ["DNS:web1.example.com"]),
        ("Web1.Example.com.", [], True, ["DNS:web1.example.com"]),
        ("web1.example.com", ["www.example.com"], True, ["DNS:web1.example.com", "DNS:www.example.com"]),
        ("web1.example.com", ["DNS:WEB1.example.com", "www.example.com"], True, ["DNS:web1.example.com", "DNS:www.example.com"]),
        ("web1.example.com", ["b.example.com", "a.example.com"], True, ["DNS:web1.example.com", "DNS:b.example.com", "DNS:a.example.com"]),
        ("web1.example.com", ["a.example.com", "DNS:A.example.com", "a.example.com."], True, ["DNS:web1.example.com", "DNS:a.example.com"]),
        ("10.0.0.1", [], True, ["IP:10.0.0.1"]),
        ("10.0.0.1", ["IP:10.0.0.1"], True, ["IP:10.0.0.1"]),
        ("2001:DB8::1", ["IP:2001:db8:0::1"], True, ["IP:2001:db8::1"]),
        ("*.example.com", [], True, ["DNS:*.example.com"]),
        ("My Web Server", ["web1.example.com"], True, ["DNS:web1.example.com"]),
        ("web1.example.com", ["www.example.com"], False, ["DNS:www.example.com"]),
        ("web1.example.com", [], False, []),
        ("web1.example.com", ["IP:10.0.0.1", "ops@example.com", "URI:https://x.example/"], True,
         ["DNS:web1.example.com", "IP:10.0.0.1", "EMAIL:ops@example.com", "URI:https://x.example/"]),
    ],
    ids=[
        "cn-only",
        "cn-normalised",
        "cn-first-then-sans",
        "cn-duplicate-in-sans-dropped",
        "order-kept",
        "duplicates-after-normalising-dropped",
        "ip-cn-becomes-ip-san",
        "ip-cn-not-duplicated",
        "ipv6-cn-normalised-and-deduplicated",
        "wildcard-cn",
        "non-dns-cn-not-added",
        "add-cn-off",
        "add-cn-off-no-sans",
        "mixed-kinds",
    ],
)
def test_make_sans(common_name, sans, add_cn, expected):
    result = make_sans(common_name, sans, add_cn=add_cn)
    assert [str(s) for s in result] == expected
    assert len(set(result)) == len(result)


def test_make_sans_rejects_invalid_san():
    with pytest.raises(InvalidInput) as info:
        make_sans("web1.example.com", ["web1.example.com", "DNS:bad name"])
    assert info.value.field == "subject_alt_names"


# --- is_dns_name / check_name -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.com", True),
        ("*.example.com", True),
        ("a" * 63, True),
        ("a" * 64, False),
        (".".join(["a" * 63] * 3) + "." + "a" * 61, True),  # 253 characters
        (".".join(["a" * 63] * 3) + "." + "a" * 62, False),  # 254 characters
        ("", False),
        ("*", False),
        ("example.com\n", False),
        ("exa\nmple.com", False),
    ],
    ids=[
        "plain",
        "wildcard",
        "63-char-label",
        "64-char-label",
        "253-chars",
        "254-chars",
        "empty",
        "bare-asterisk",
        "trailing-newline",
        "inner-newline",
    ],
)
def test_is_dns_name(value, expected):
    assert is_dns_name(value) is expected


@pytest.mark.parametrize(
    "value",
    ["web1", "a", "Web_1.prod-eu", "0abc", "a" * 128],
    ids=["simple", "one-char", "all-allowed-punctuation", "leading-digit", "128-chars"],
)
def test_check_name_accepts(value):
    assert check_name(value, "certificate") == value


@pytest.mark.parametrize(
    "value",
    ["", "-web", ".web", "_web", "web 1", "web/1", "web:1", "wéb", "a" * 129, None, 42, "web1\n", "web1\nweb2"],
    ids=[
        "empty",
        "leading-hyphen",
        "leading-dot",
        "leading-underscore",
        "space",
        "slash",
        "colon",
        "non-ascii",
        "129-chars",
        "none",
        "int",
        "trailing-newline",
        "inner-newline",
    ],
)
def test_check_name_rejects(value):
    with pytest.raises(InvalidInput) as info:
        check_name(value, "certificate")
    assert info.value.field == "name"
    assert "certificate name" in str(info.value)
