"""Normalize a messy website value to the company's registrable (root) domain.

A domain table holds websites as people type them: ``https://www.Acme.com/careers``,
``<https://acme.com>``, ``[acme.com](https://acme.com/jobs)``, ``jane@acme.com`` or
``bücher.de``. The Openmart lookup wants the company root domain (``acme.com``), so
:func:`normalize_website` reduces each value to the domain registered under a public
suffix, or says why it cannot, with a reason code and a message a person can act on.

How a value is read, in order:

1. Surrounding whitespace (tabs and zero-width characters too) and quotes are stripped,
   then ``<...>`` wrappers and markdown links ``[text](target)``. For a markdown link the
   target is used, because that is where the link really goes; the text is only used
   when the target gives no usable domain (for example a relative ``/careers`` target).
2. ``mailto:`` and any ``scheme://`` are dropped; so are credentials (``user:pw@``, which
   also turns an e-mail address into its domain), port, path, query, fragment and one
   trailing dot. The host is lowercased and mapped with UTS #46 (full-width letters and
   dots become ASCII).
3. IP addresses, ``localhost`` and names outside the Public Suffix List are rejected.
4. The host is reduced to its registrable domain with ``tldextract`` and the Public
   Suffix List snapshot bundled with it (ICANN section only, never fetched at run time).
   ``www.`` and other subdomains go away because they are not part of it; a bare suffix
   such as ``co.uk`` is rejected. Private-section entries such as ``github.io`` are not
   suffixes here, so ``acme.github.io`` reduces to ``github.io``.
5. Unicode labels become punycode with ``idna`` (IDNA 2008), so ``bücher.de`` and
   ``xn--bcher-kva.de`` are one lookup. Labels IDNA 2008 refuses but browsers accept
   (emoji, ``ab--cd``) fall back to Python's IDNA 2003 codec; what neither accepts is
   rejected with ``invalid_label``.
6. A domain on the hosted list (job boards, applicant-tracking systems, site builders)
   is flagged ``hosted_site``: it is the host's domain, not the company's. The bare
   home page of such a service (``https://medium.com/``) is not flagged: it is the
   website of the company that runs the service.

Example:
    >>> normalize_website("https://WWW.Acme.co.uk:8443/jobs?ref=x#top")
    DomainResult(domain='acme.co.uk', reason=None, message=None)
    >>> normalize_website("https://jobs.lever.co/acme").reason
    'hosted_site'
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

import idna
import tldextract

EMPTY = "empty"
IP_ADDRESS = "ip_address"
LOCALHOST = "localhost"
PUBLIC_SUFFIX = "public_suffix"
INVALID_LABEL = "invalid_label"
HOSTED_SITE = "hosted_site"

WEBSITE_REASONS = (EMPTY, IP_ADDRESS, LOCALHOST, PUBLIC_SUFFIX, INVALID_LABEL, HOSTED_SITE)
"""Every reason code :func:`normalize_website` can return."""

HOSTED_DOMAINS_RESOURCE = "data/hosted_domains.txt"
"""Path of the bundled hosted-domain list inside the ``openmart_pipeline`` package."""

_SHOWN_VALUE_MAX = 80
_MAX_LABEL_LENGTH = 63
_MAX_DOMAIN_LENGTH = 253

# Characters that wrap a pasted value without being part of it: Unicode whitespace
# (str.strip covers tabs and non-breaking spaces), zero-width marks a copy from a web
# page or spreadsheet leaves behind, and straight or typographic quotes.
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\ufe0f"
_QUOTES = "\"'`\u2018\u2019\u201c\u201d\u00ab\u00bb"
_MARKDOWN_LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>[^)]*)\)", re.DOTALL)
_MARKDOWN_TITLE = re.compile(r"""\s+(?:"[^"]*"|'[^']*')$""")
_ANGLE_WRAPPED = re.compile(r"<(?P<inner>[^<>]*)>", re.DOTALL)
_SCHEME = re.compile(r"(?:[a-z][a-z0-9+.\-]*:)?//|(?:https?|ftp):/*|mailto:", re.IGNORECASE)
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LOCAL_HOST_SUFFIXES = (".localhost", ".localdomain")


@dataclass(frozen=True)
class DomainResult:
    """The outcome of normalizing one website value.

    A usable value has ``domain`` set and ``reason`` None. A rejected value has
    ``reason`` and ``message`` set and ``domain`` None, except ``hosted_site``: there
    ``domain`` holds the host's registrable domain (e.g. ``lever.co``) for the record,
    and the row must still not be sent.

    Attributes:
        domain: Lowercase ASCII registrable domain, e.g. ``acme.com``, or None.
        reason: One of :data:`WEBSITE_REASONS`, or None when the domain is usable.
        message: One line naming the value and how to fix it, or None.
    """

    domain: str | None
    reason: str | None
    message: str | None


def normalize_website(value: object, hosted_domains: frozenset[str] | None = None) -> DomainResult:
    """Reduce a website, URL or e-mail address to the company's registrable domain.

    Never raises: any input (None, NaN, numbers, arbitrary Unicode) gives a result.

    Args:
        value: The website cell as read. Non-text values are turned into text first;
            None and NaN count as empty.
        hosted_domains: Domains whose sites belong to a hosting service rather than
            the company (see :func:`load_hosted_domains`). None uses the bundled list;
            pass ``frozenset()`` to flag nothing.

    Returns:
        The registrable domain, or a reason code and a message saying what to fix.
    """
    if hosted_domains is None:
        hosted_domains = _bundled_hosted_domains()
    text = _as_text(value)
    shown = _shown(text)

    primary, link_texts = _unwrap(text)
    result = _normalize_candidate(primary, shown, hosted_domains)
    if result.reason in (None, HOSTED_SITE):
        return result

    # A markdown link whose target gives nothing usable (e.g. a relative "/careers")
    # may still carry the website in its text.
    for link_text in link_texts:
        fallback = _normalize_candidate(_unwrap(link_text)[0], shown, hosted_domains)
        if fallback.reason is None:
            return fallback
    return result


def load_hosted_domains(extra_path: str | os.PathLike[str] | None = None) -> frozenset[str]:
    """Read the domains whose sites are hosted for someone else (job boards, ATS, builders).

    The bundled list lives in ``openmart_pipeline/data/hosted_domains.txt``. A team can
    add its own entries in a file of the same format: one domain per line, ``#`` starts
    a comment. An entry is usually a registrable domain (``lever.co`` flags every
    ``*.lever.co`` host); a longer host name (``sites.google.com``) flags only that host
    and its subdomains.

    Args:
        extra_path: Optional file with more entries, added to the bundled ones.

    Returns:
        The lowercase entries of both lists.

    Raises:
        ValueError: An entry is not a plain host name (it has a scheme, path, port or
            space); the message names the file and line.
        OSError: ``extra_path`` cannot be read.
    """
    bundled = resources.files("openmart_pipeline").joinpath(HOSTED_DOMAINS_RESOURCE)
    entries = set(_parse_hosted_lines(bundled.read_text(encoding="utf-8"), str(bundled)))
    if extra_path is not None:
        with open(extra_path, encoding="utf-8") as extra:
            entries.update(_parse_hosted_lines(extra.read(), os.fspath(extra_path)))
    return frozenset(entries)


def display_name_from_domain(domain: str) -> str:
    """Make a display name from a domain's registrable label.

    Used when a row has no company name and the caller allows deriving one.

    Args:
        domain: A domain as returned by :func:`normalize_website`.

    Returns:
        The label before the public suffix, hyphens as spaces, each word capitalized:
        ``acme-tools.co.uk`` gives ``Acme Tools``; ``xn--bcher-kva.de`` gives ``Bücher``.
    """
    label = _extractor()(domain).domain or domain.split(".")[0]
    label = _unicode_label(label)
    words = [word for word in label.replace("_", "-").split("-") if word]
    return " ".join(word[:1].upper() + word[1:] for word in words)


def _normalize_candidate(text: str, shown: str, hosted: frozenset[str]) -> DomainResult:
    """Normalize one unwrapped candidate; ``shown`` is the original value for messages."""
    if not text:
        return _rejected(
            EMPTY, "The website is empty: put the company's website (e.g. acme.com) in the row."
        )
    scheme = _SCHEME.match(text)
    rest = text[scheme.end() :] if scheme else text
    if _is_ip(rest):
        return _ip_rejected(shown)

    try:
        url = urlsplit("//" + rest)
        host = url.hostname or ""
    except ValueError:
        return _invalid(shown, "it cannot be read as a URL")
    if not host:
        return _invalid(shown, "it has no host name")
    host = host[:-1] if host.endswith(".") else host

    if _is_ip(host):
        return _ip_rejected(shown)
    if host == "localhost" or host.endswith(_LOCAL_HOST_SUFFIXES):
        return _rejected(
            LOCALHOST,
            f"{shown} points at the local computer, not a company: put "
            "the company's public website (e.g. acme.com) in the row.",
        )
    try:
        host = idna.uts46_remap(host, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError, ValueError):
        return _invalid(shown, "it has characters that cannot be in a domain name")
    return _registrable(host, shown, hosted, is_homepage=url.path in ("", "/"))


def _registrable(
    host: str, shown: str, hosted: frozenset[str], *, is_homepage: bool
) -> DomainResult:
    """Reduce a lowercase, UTS #46-mapped host to its registrable domain and check it."""
    labels = host.split(".")
    if len(labels) < 2:
        return _invalid(shown, "it has no dot")
    if "" in labels:
        return _invalid(shown, "it has an empty label (two dots in a row, or a leading dot)")

    try:
        parts = _extractor()(host)
    except (UnicodeError, ValueError):
        return _invalid(shown, "it has characters that cannot be in a domain name")
    if not parts.suffix:
        return _invalid(shown, "it does not end in a public suffix such as .com or .co.uk")
    if not parts.domain:
        return _rejected(
            PUBLIC_SUFFIX,
            f"{shown} is a public suffix, not a company's domain: "
            f"put the full domain, e.g. acme.{_ascii_or_same(parts.suffix)}.",
        )

    ascii_labels = []
    for label in f"{parts.domain}.{parts.suffix}".split("."):
        ascii_label = _ascii_label(label)
        if ascii_label is not None and len(ascii_label) > _MAX_LABEL_LENGTH:
            return _invalid(shown, f"the part {_quoted(label)} is longer than 63 characters")
        if ascii_label is None or not _LDH_LABEL.fullmatch(ascii_label):
            return _invalid(
                shown, f"the part {_quoted(label)} has characters not allowed in a domain name"
            )
        ascii_labels.append(ascii_label)
    domain = ".".join(ascii_labels)
    if len(domain) > _MAX_DOMAIN_LENGTH:
        return _invalid(shown, "it is longer than 253 characters")

    hosted_entry = _hosted_entry(domain, host, hosted)
    # The bare home page of a hosting service is the site of the company that runs it
    # (https://medium.com/ for Medium), not a page it hosts for someone else.
    own_site = is_homepage and host in (hosted_entry, f"www.{hosted_entry}")
    if hosted_entry is not None and not own_site:
        return DomainResult(
            domain,
            HOSTED_SITE,
            (
                f"{shown} is on {hosted_entry} (a job board, applicant-tracking, site-builder or "
                "social site), not the company's own site: put the company's own website in "
                "the row."
            ),
        )
    return DomainResult(domain, None, None)


def _ascii_label(label: str) -> str | None:
    """Give a label's ASCII (punycode) form, or None when no IDNA rule accepts it."""
    if label.isascii():
        if label.startswith("xn--") and _unicode_label(label) == label:
            return None
        return label
    try:
        return idna.alabel(label).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    # Browsers follow UTS #46, which still accepts what IDNA 2003 did (symbols, emoji);
    # Python's built-in codec is IDNA 2003, so it gives the same ASCII form they use.
    try:
        encoded = label.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        return None
    return encoded.lower()


def _unicode_label(label: str) -> str:
    """Decode a punycode label for display; give it back unchanged when it does not decode."""
    if not label.startswith("xn--"):
        return label
    try:
        return idna.ulabel(label)
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    try:
        return label.encode("ascii").decode("idna")
    except (UnicodeError, ValueError):
        return label


def _ascii_or_same(suffix: str) -> str:
    """Give a suffix's punycode form for a message, or the suffix when it has none."""
    labels = [_ascii_label(label) for label in suffix.split(".")]
    return ".".join(labels) if None not in labels else suffix


def _hosted_entry(domain: str, host: str, hosted: frozenset[str]) -> str | None:
    """Give the hosted-list entry that covers the host, or None."""
    if domain in hosted:
        return domain
    labels = host.split(".")
    for start in range(len(labels) - 1):
        candidate = ".".join(labels[start:])
        if candidate in hosted:
            return candidate
    return None


def _unwrap(text: str) -> tuple[str, list[str]]:
    """Strip wrappers, giving the value to normalize and the texts of any markdown links."""
    link_texts: list[str] = []
    while True:
        stripped = text.strip().strip(_ZERO_WIDTH + _QUOTES).strip()
        link = _MARKDOWN_LINK.fullmatch(stripped)
        angle = _ANGLE_WRAPPED.fullmatch(stripped)
        if link:
            link_texts.append(link["text"])
            target = _MARKDOWN_TITLE.sub("", link["target"].strip())
            stripped = target or link["text"]
        elif angle:
            stripped = angle["inner"]
        if stripped == text:
            return text, link_texts
        text = stripped


def _as_text(value: object) -> str:
    """Turn a cell of any type into text; None, NaN and pandas' NA become empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, float) and math.isnan(value):
        return ""
    try:
        text = str(value)
    except Exception:  # an arbitrary object's __str__ may fail; the value is then unusable
        return ""
    # pandas.NA, NaT and numpy's NaN types print as these; a website is never spelled so.
    return "" if text in ("<NA>", "nan", "NaT") else text


def _is_ip(text: str) -> bool:
    """Tell whether the text is an IPv4 or IPv6 address (brackets allowed)."""
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _shown(text: str) -> str:
    """Quote a value for a message: one line, credentials hidden, long values shortened."""
    hidden = re.sub(r"(?<=//)[^/?#@\s]*@", "***@", text.strip())
    return _quoted(hidden)


def _quoted(text: str) -> str:
    """Quote text for a message, escaping control characters and shortening long text."""
    if len(text) > _SHOWN_VALUE_MAX:
        text = text[: _SHOWN_VALUE_MAX - 3] + "..."
    printable = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text
    )
    return f"'{printable}'"


def _rejected(reason: str, message: str) -> DomainResult:
    return DomainResult(None, reason, message)


def _invalid(shown: str, why: str) -> DomainResult:
    return _rejected(
        INVALID_LABEL,
        f"{shown} is not a valid domain name because {why}: put "
        "the company's website spelled like acme.com in the row.",
    )


def _ip_rejected(shown: str) -> DomainResult:
    return _rejected(
        IP_ADDRESS,
        f"{shown} is an IP address, not a domain name: put the "
        "company's domain (e.g. acme.com) in the row.",
    )


def _parse_hosted_lines(text: str, source: str) -> list[str]:
    """Read hosted-list lines: one entry per line, ``#`` comments, blank lines ignored."""
    entries = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip().lower().rstrip(".")
        if not entry:
            continue
        if re.search(r"[\s/:@]", entry) or "." not in entry:
            raise ValueError(
                f"{source}, line {line_number}: {_quoted(entry)} is not a host name; write "
                "one domain per line without scheme or path, e.g. lever.co"
            )
        entries.append(entry)
    return entries


@functools.cache
def _bundled_hosted_domains() -> frozenset[str]:
    return load_hosted_domains()


@functools.cache
def _extractor() -> tldextract.TLDExtract:
    # No suffix-list URLs and no cache directory: tldextract uses the snapshot it ships
    # with and never touches the network or the disk, so results do not depend on
    # where or when a run happens.
    return tldextract.TLDExtract(
        suffix_list_urls=(),
        cache_dir=None,
        fallback_to_snapshot=True,
        include_psl_private_domains=False,
    )
