"""Specifications of website normalization: messy values in, registrable domains out."""

from __future__ import annotations

import math
import socket
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmart_pipeline import domains
from openmart_pipeline.domains import (
    EMPTY,
    HOSTED_SITE,
    INVALID_LABEL,
    IP_ADDRESS,
    LOCALHOST,
    PUBLIC_SUFFIX,
    WEBSITE_REASONS,
    DomainResult,
    display_name_from_domain,
    load_hosted_domains,
    normalize_website,
)

# (value, expected domain, expected reason); ids say what form each value shows.
WEBSITE_FORMS = [
    pytest.param("acme.com", "acme.com", None, id="bare-domain"),
    pytest.param("https://acme.com", "acme.com", None, id="https"),
    pytest.param("http://www.acme.com/", "acme.com", None, id="http-www-slash"),
    pytest.param("www.acme.com", "acme.com", None, id="www-without-scheme"),
    pytest.param("HTTPS://WWW.ACME.COM/ABOUT", "acme.com", None, id="uppercase"),
    pytest.param("https://acme.com:8443/", "acme.com", None, id="port"),
    pytest.param("https://user:secret@acme.com/", "acme.com", None, id="credentials"),
    pytest.param("https://acme.com/?utm_source=x&y=1", "acme.com", None, id="query"),
    pytest.param("https://acme.com/#contact", "acme.com", None, id="fragment"),
    pytest.param("https://acme.com/careers/jobs/42", "acme.com", None, id="deep-path"),
    pytest.param("https://acme.com.", "acme.com", None, id="trailing-dot"),
    pytest.param("//acme.com/x", "acme.com", None, id="protocol-relative"),
    pytest.param("ftp://files.acme.com", "acme.com", None, id="ftp-scheme"),
    pytest.param("jane.doe@acme.com", "acme.com", None, id="email"),
    pytest.param("mailto:info@acme.com?subject=hi", "acme.com", None, id="mailto"),
    pytest.param("https://careers.acme.com/jobs", "acme.com", None, id="careers-subdomain"),
    pytest.param("https://a.b.c.acme.com", "acme.com", None, id="deep-subdomain"),
    pytest.param("https://www.acme.co.uk/", "acme.co.uk", None, id="co-uk"),
    pytest.param("http://www.tt.com.pl/", "tt.com.pl", None, id="com-pl"),
    pytest.param("https://city.kawasaki.jp", "city.kawasaki.jp", None, id="psl-exception-rule"),
    pytest.param("https://www.amazon.jobs/en/", "amazon.jobs", None, id="jobs-tld"),
    pytest.param("https://bücher.de/", "xn--bcher-kva.de", None, id="idn-unicode"),
    pytest.param("xn--bcher-kva.de", "xn--bcher-kva.de", None, id="idn-punycode"),
    pytest.param("https://BÜCHER.de", "xn--bcher-kva.de", None, id="idn-uppercase"),
    pytest.param("пример.рф", "xn--e1afmkfd.xn--p1ai", None, id="idn-suffix"),
    pytest.param("ＡＣＭＥ。ｃｏｍ", "acme.com", None, id="fullwidth"),
    pytest.param("i❤.ws", "xn--i-7iq.ws", None, id="emoji-idna2003-fallback"),
    pytest.param("ab--cd.com", "ab--cd.com", None, id="double-hyphen-label"),
    pytest.param("https://my_site.acme.com", "acme.com", None, id="underscore-subdomain"),
    pytest.param("  https://acme.com  ", "acme.com", None, id="spaces"),
    pytest.param("https://acme.com\t", "acme.com", None, id="trailing-tab"),
    pytest.param('"https://acme.com"', "acme.com", None, id="double-quotes"),
    pytest.param("'acme.com'", "acme.com", None, id="single-quotes"),
    pytest.param("\u201cacme.com\u201d", "acme.com", None, id="typographic-quotes"),
    pytest.param("<https://acme.com>", "acme.com", None, id="angle-brackets"),
    pytest.param("\u200bacme.com\ufeff", "acme.com", None, id="zero-width-marks"),
    pytest.param(
        "[https://acme.com](https://acme.com/careers)", "acme.com", None, id="markdown-link"
    ),
    pytest.param(
        "[https://old.com](https://new.com/jobs)", "new.com", None, id="markdown-target-wins"
    ),
    pytest.param("[acme.com](/careers)", "acme.com", None, id="markdown-relative-target"),
    pytest.param('[Acme](https://acme.com "Acme home")', "acme.com", None, id="markdown-title"),
    pytest.param("<[acme.com](https://acme.com)>", "acme.com", None, id="nested-wrappers"),
    pytest.param("https://medium.com/", "medium.com", None, id="hosting-company-homepage"),
    pytest.param("", None, EMPTY, id="empty-string"),
    pytest.param("   \t ", None, EMPTY, id="whitespace-only"),
    pytest.param(None, None, EMPTY, id="none"),
    pytest.param(math.nan, None, EMPTY, id="nan"),
    pytest.param("<>", None, EMPTY, id="empty-angle-brackets"),
    pytest.param("http://192.168.1.10/admin", None, IP_ADDRESS, id="ipv4"),
    pytest.param("10.0.0.1:8080", None, IP_ADDRESS, id="ipv4-port"),
    pytest.param("http://[2001:db8::1]:8080/", None, IP_ADDRESS, id="ipv6-bracketed"),
    pytest.param("2001:db8::1", None, IP_ADDRESS, id="ipv6-bare"),
    pytest.param("http://localhost:3000", None, LOCALHOST, id="localhost"),
    pytest.param("app.localhost", None, LOCALHOST, id="localhost-subdomain"),
    pytest.param("co.uk", None, PUBLIC_SUFFIX, id="bare-suffix"),
    pytest.param("https://www.co.uk/", "www.co.uk", None, id="www-kept-when-registrable"),
    pytest.param("com", None, INVALID_LABEL, id="no-dot"),
    pytest.param("acme", None, INVALID_LABEL, id="name-without-suffix"),
    pytest.param("acme.internal", None, INVALID_LABEL, id="unknown-suffix"),
    pytest.param("acme..com", None, INVALID_LABEL, id="empty-label"),
    pytest.param("ac me.com", None, INVALID_LABEL, id="space-in-label"),
    pytest.param("ac_me.com", None, INVALID_LABEL, id="underscore-in-domain"),
    pytest.param("-acme.com", None, INVALID_LABEL, id="leading-hyphen"),
    pytest.param("a" * 64 + ".com", None, INVALID_LABEL, id="label-too-long"),
    pytest.param("xn--zz.com", None, INVALID_LABEL, id="bad-punycode"),
    pytest.param("acme.com, other.com", None, INVALID_LABEL, id="two-values"),
    pytest.param("http://[::1", None, IP_ADDRESS, id="unclosed-ipv6-bracket"),
    pytest.param("https://acme\uff0fcom", None, INVALID_LABEL, id="fullwidth-slash"),
    pytest.param(12345, None, INVALID_LABEL, id="integer"),
    pytest.param("https://", None, INVALID_LABEL, id="scheme-only"),
    pytest.param("https://jobs.lever.co/acme", "lever.co", HOSTED_SITE, id="lever"),
    pytest.param("https://atento.gupy.io", "gupy.io", HOSTED_SITE, id="gupy"),
    pytest.param(
        "https://boards.greenhouse.io/acme", "greenhouse.io", HOSTED_SITE, id="greenhouse"
    ),
    pytest.param("https://acme.github.io/", "github.io", HOSTED_SITE, id="github-pages"),
    pytest.param("acme.myshopify.com", "myshopify.com", HOSTED_SITE, id="shopify"),
    pytest.param(
        "https://acme.wd5.myworkdayjobs.com/en-US", "myworkdayjobs.com", HOSTED_SITE, id="workday"
    ),
    pytest.param("https://medium.com/@acme", "medium.com", HOSTED_SITE, id="hosted-path"),
    pytest.param(
        "https://www.linkedin.com/company/acme", "linkedin.com", HOSTED_SITE, id="linkedin"
    ),
    pytest.param(
        "https://sites.google.com/view/acme", "google.com", HOSTED_SITE, id="host-level-entry"
    ),
    pytest.param("https://www.google.com/", "google.com", None, id="host-level-entry-sibling"),
]


@pytest.mark.parametrize(("value", "domain", "reason"), WEBSITE_FORMS)
def test_normalize_website_reduces_real_world_forms(value, domain, reason):
    result = normalize_website(value)

    assert (result.domain, result.reason) == (domain, reason)
    assert (result.message is None) == (reason is None)


def test_normalize_website_rejection_messages_name_the_value_and_the_fix():
    hosted = normalize_website("https://jobs.lever.co/acme")
    suffix = normalize_website("co.uk")
    ip = normalize_website("10.0.0.1")

    assert "'https://jobs.lever.co/acme'" in hosted.message
    assert "put the company's own website in the row" in hosted.message
    assert "'co.uk'" in suffix.message and "acme.co.uk" in suffix.message
    assert "'10.0.0.1'" in ip.message and "acme.com" in ip.message
    for result in (hosted, suffix, ip):
        assert "\n" not in result.message


def test_normalize_website_hides_credentials_in_messages():
    result = normalize_website("https://admin:hunter2@10.1.2.3/login")

    assert result.reason == IP_ADDRESS
    assert "hunter2" not in result.message
    assert "admin" not in result.message


def test_normalize_website_escapes_control_characters_in_messages():
    result = normalize_website("acme\x00.com")

    assert result.reason == INVALID_LABEL
    assert "\x00" not in result.message and "\\x00" in result.message


def test_normalize_website_unicode_and_ascii_spellings_are_one_domain():
    assert (
        normalize_website("https://www.müller.de").domain
        == normalize_website("xn--mller-kva.de").domain
    )


def test_normalize_website_with_empty_hosted_list_flags_nothing():
    result = normalize_website("https://jobs.lever.co/acme", hosted_domains=frozenset())

    assert result == DomainResult("lever.co", None, None)


def test_normalize_website_uses_the_hosted_list_it_is_given():
    result = normalize_website("https://jobs.acme-ats.example.com", frozenset({"example.com"}))

    assert (result.domain, result.reason) == ("example.com", HOSTED_SITE)


def test_normalize_website_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("normalization tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    domains._extractor.cache_clear()  # build the extractor again, with the network blocked
    try:
        result = normalize_website("https://www.example.co.uk/path")
    finally:
        domains._extractor.cache_clear()

    assert result.domain == "example.co.uk"


def test_load_hosted_domains_bundles_the_common_hosts():
    hosted = load_hosted_domains()

    expected = {
        "lever.co", "greenhouse.io", "workable.com", "gupy.io", "myshopify.com",
        "wixsite.com", "github.io", "ashbyhq.com", "bamboohr.com", "recruitee.com",
        "breezy.hr", "smartrecruiters.com", "teamtailor.com", "personio.de", "jobvite.com",
        "icims.com", "myworkdayjobs.com", "wordpress.com", "squarespace.com", "webflow.io",
        "notion.site", "angel.co", "wellfound.com", "linkedin.com",
    }  # fmt: skip
    assert expected <= hosted
    assert all(entry == entry.strip().lower() and "#" not in entry for entry in hosted)


def test_load_hosted_domains_adds_the_entries_of_an_extra_file(tmp_path):
    extra = tmp_path / "hosted.txt"
    extra.write_text("# our agency's hosts\nAcme-Sites.com  # trailing comment\n\n", "utf-8")

    hosted = load_hosted_domains(extra)

    assert "acme-sites.com" in hosted
    assert "lever.co" in hosted
    assert normalize_website("client.acme-sites.com", hosted).reason == HOSTED_SITE


def test_load_hosted_domains_rejects_a_url_naming_file_and_line(tmp_path):
    extra = tmp_path / "hosted.txt"
    extra.write_text("ok.com\nhttps://jobs.example.com/\n", "utf-8")

    with pytest.raises(ValueError, match=r"hosted\.txt, line 2: .* e\.g\. lever\.co"):
        load_hosted_domains(extra)


@pytest.mark.parametrize(
    ("domain", "name"),
    [
        pytest.param("acme-tools.com", "Acme Tools", id="hyphens"),
        pytest.param("acme.co.uk", "Acme", id="two-level-suffix"),
        pytest.param("10up.com", "10up", id="leading-digit"),
        pytest.param("xn--bcher-kva.de", "Bücher", id="punycode"),
    ],
)
def test_display_name_from_domain_uses_the_registrable_label(domain, name):
    assert display_name_from_domain(domain) == name


# Values shaped like websites, so the properties also run through the success path.
_LABEL = st.text(string.ascii_letters + string.digits + "-_äöüß❤", min_size=1, max_size=12)
_WEBSITES = st.builds(
    "{}{}{}.{}{}{}".format,
    st.sampled_from(["", "http://", "https://", "HTTPS://", "//", "mailto:x@", "u:p@"]),
    st.sampled_from(["", "www.", "jobs.", "a.b."]),
    _LABEL,
    st.sampled_from(["com", "co.uk", "de", "io", "jobs", "рф", "github.io", "COM", "com."]),
    st.sampled_from(["", ":8080", ":x"]),
    st.sampled_from(["", "/", "/careers?q=1#f", " ", "\t", "/a b"]),
)
_ANY_VALUE = st.one_of(
    st.text(),
    _WEBSITES,
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.binary(max_size=20),
)


# No deadline: how fast an example runs depends on the machine, not on the promise.
@settings(deadline=None)
@given(_ANY_VALUE)
def test_normalize_website_never_raises_and_always_gives_one_outcome(value):
    result = normalize_website(value)

    assert isinstance(result, DomainResult)
    assert (result.domain is not None) or (result.reason is not None)
    assert result.reason is None or result.reason in WEBSITE_REASONS
    assert (result.reason is None) == (result.message is None)
    if result.reason not in (None, HOSTED_SITE):
        assert result.domain is None


@settings(deadline=None)
@given(st.one_of(_WEBSITES, st.text()))
def test_normalize_website_is_idempotent(value):
    domain = normalize_website(value).domain

    if domain is not None:
        assert normalize_website(domain).domain == domain


@settings(deadline=None)
@given(st.one_of(_WEBSITES, st.text()))
def test_normalize_website_domain_is_lowercase_ascii_without_url_parts(value):
    domain = normalize_website(value).domain

    if domain is not None:
        assert domain.isascii()
        assert domain == domain.lower()
        assert "." in domain and not domain.endswith(".")
        assert not any(ch in domain for ch in ":/?#@[]") and not any(ch.isspace() for ch in domain)
        assert all(0 < len(label) <= 63 for label in domain.split("."))
