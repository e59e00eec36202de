"""A deployment's mail authentication judged from its settings (and, given them, the DNS
records it publishes): findings, and the exact records still to publish (`newsletter doctor`)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from newsletter.addresses import dmarc_aligned, organisational_domain
from newsletter.config import Settings
from newsletter.dkim import dns_record_name, dns_record_value, key_size
from newsletter.errors import ConfigError


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"  #: works, but mail may be misfiled or something goes unread
    FAIL = "fail"  #: receivers will refuse or misjudge the mail; doctor exits 1
    TODO = "todo"  #: a DNS record to publish, given exactly where it can be known


@dataclass(frozen=True, slots=True)
class DnsRecord:
    name: str
    type: str
    value: str


@dataclass(frozen=True, slots=True)
class Finding:
    status: Status
    subject: str
    sentence: str
    #: What to publish: with a todo, and with a fail that publishing it fixes.
    record: DnsRecord | None = None


@dataclass(frozen=True, slots=True)
class KeyFile:
    """The DKIM key file as the edge read it: its PEM, or why it could not be read."""

    pem: bytes | None
    problem: str = ""


#: TXT records by lower-case name, each record's strings joined; [] when none is published.
Records = Mapping[str, list[str]]

# Reserved for examples and tests (RFC 2606, RFC 6761): no mail to or from them authenticates.
_PLACEHOLDER_DOMAINS = ("example.org", "example.com", "example.net", "localhost")
_PLACEHOLDER_TLDS = ("test", "invalid", "example", "localhost")
_SHIPPED_POSTAL_ADDRESS = re.compile(r"1 example street|example\.(org|com|net)", re.IGNORECASE)
_DMARC_POLICIES = ("none", "quarantine", "reject")


def diagnose(
    settings: Settings, *, records: Records | None, key_file: KeyFile | None = None
) -> list[Finding]:
    """Every finding, in the order a person fixes them; `records` is None when DNS was not
    looked up, and `key_file` is the DKIM key as read at the edge."""
    return [
        _base_url(settings),
        _postal_address(settings),
        _addresses(settings),
        _relay(settings),
        _secret_key(settings),
        _return_path(settings),
        _inbound(settings),
        *_alignment(settings),
        *_dkim(settings, key_file, records),
        _spf(settings, records),
        *_dmarc(settings, records),
    ]


def names_to_look_up(settings: Settings) -> list[str]:
    """The TXT names `diagnose` compares with what it expects."""
    names = [
        envelope_domain(settings),
        *(_dmarc_name(org) for org in _from_organisations(settings)),
    ]
    if settings.dkim.enabled:
        names.append(dns_record_name(settings.dkim.selector, settings.dkim.domain))
    return list(dict.fromkeys(name.lower() for name in names))


def envelope_domain(settings: Settings) -> str:
    """The domain of the envelope sender, which SPF checks: the return path's, else From's."""
    return _domain_of(settings.bounces.return_path or settings.sender.address)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _from_domains(settings: Settings) -> list[str]:
    sender = settings.sender
    return list(dict.fromkeys(_domain_of(a) for a in (sender.address, sender.transactional_from)))


def _from_organisations(settings: Settings) -> list[str]:
    return list(dict.fromkeys(organisational_domain(d) for d in _from_domains(settings)))


def _is_placeholder(domain: str) -> bool:
    domain = domain.lower().rstrip(".")
    return domain.rpartition(".")[2] in _PLACEHOLDER_TLDS or any(
        domain == reserved or domain.endswith("." + reserved) for reserved in _PLACEHOLDER_DOMAINS
    )


def _is_local(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(settings: Settings) -> Finding:
    base = settings.site.base
    if settings.site.base_url.scheme == "https":
        return Finding(Status.OK, "base_url", f"{base} is https: links in mail travel encrypted.")
    if settings.smtp.host:
        return Finding(
            Status.FAIL,
            "base_url",
            f"{base} is plain http: unsubscribe links in real mail would travel in clear text; "
            "use https.",
        )
    return Finding(
        Status.WARN,
        "base_url",
        f"{base} is plain http: fine for the development outbox; real mail needs https.",
    )


def _postal_address(settings: Settings) -> Finding:
    postal = settings.sender.postal_address
    if not settings.sender.postal_lines:
        return Finding(
            Status.FAIL,
            "postal address",
            "sender.postal_address is blank: CAN-SPAM requires one in every email.",
        )
    if _SHIPPED_POSTAL_ADDRESS.search(postal):
        return Finding(
            Status.WARN,
            "postal address",
            "sender.postal_address is still the shipped example: put yours (CAN-SPAM).",
        )
    lines = len(settings.sender.postal_lines)
    return Finding(
        Status.OK, "postal address", f"sender.postal_address ({lines} lines) ends every email."
    )


def _addresses(settings: Settings) -> Finding:
    sender = settings.sender
    addresses = [sender.address, sender.transactional_address, sender.unsubscribe_address]
    placeholders = [a for a in dict.fromkeys(addresses) if a and _is_placeholder(_domain_of(a))]
    if placeholders:
        return Finding(
            Status.WARN,
            "addresses",
            f"{', '.join(placeholders)}: a domain reserved for examples never authenticates; "
            "use your own.",
        )
    domains = ", ".join(dict.fromkeys(_domain_of(a) for a in addresses if a))
    return Finding(Status.OK, "addresses", f"sender addresses use real domains ({domains}).")


def _relay(settings: Settings) -> Finding:
    smtp = settings.smtp
    where = f"{smtp.host}:{smtp.port}"
    if not smtp.host:
        return Finding(
            Status.WARN,
            "relay",
            "smtp.host is empty: mail goes to the development outbox; none is sent.",
        )
    if smtp.tls == "none" and not _is_local(smtp.host):
        return Finding(
            Status.FAIL,
            "relay",
            f'smtp.tls is "none" to {where}: the password and every message cross the network '
            'in clear text; use "starttls" or "implicit".',
        )
    how = {"starttls": "STARTTLS", "implicit": "TLS from the first byte", "none": "on this machine"}
    return Finding(Status.OK, "relay", f"{where}, {how[smtp.tls]}.")


def _secret_key(settings: Settings) -> Finding:
    if settings.secret_key is not None:
        return Finding(Status.OK, "secret key", "links are signed with NEWSLETTER_SECRET_KEY.")
    return Finding(
        Status.WARN,
        "secret key",
        f"NEWSLETTER_SECRET_KEY is unset, so links are signed by {settings.var_dir}/secret_key: "
        "losing it breaks every link mailed.",
    )


def _return_path(settings: Settings) -> Finding:
    return_path = settings.bounces.return_path
    if not return_path:
        return Finding(
            Status.WARN,
            "return path",
            f"bounces.return_path is empty: bounces go to {settings.sender.address}, which "
            f"nobody reads; set one such as bounces@{settings.sender.domain}.",
        )
    local, _, domain = return_path.rpartition("@")
    return Finding(
        Status.OK,
        "return path",
        f"bounces come back to {local}+<delivery>-<signature>@{domain} (VERP).",
    )


def _inbound(settings: Settings) -> Finding:
    inbound = settings.inbound
    if inbound.enabled:
        if not settings.bounces.return_path:
            return Finding(
                Status.WARN,
                "bounces in",
                f"serve receives on {inbound.host}:{inbound.port}, but without "
                "bounces.return_path it takes only unsubscribes by mail; set it to read bounces.",
            )
        local, _, domain = settings.bounces.return_path.rpartition("@")
        return Finding(
            Status.OK,
            "bounces in",
            f"serve receives on {inbound.host}:{inbound.port}; your MX must pass it mail for "
            f"{local}+*@{domain} and {settings.sender.unsubscribe_address}.",
        )
    return Finding(
        Status.WARN,
        "bounces in",
        "inbound.enabled is false: bounces and mailto unsubscribes go unread unless `newsletter "
        "inbound serve` runs or your MTA pipes them to `newsletter inbound read -`.",
    )


def _alignment(settings: Settings) -> list[Finding]:
    """DMARC passes when SPF or DKIM passes for a domain of From's organisation (relaxed)."""
    from_domains = _from_domains(settings)
    froms = f"From {_with_organisations(from_domains)}"
    dkim_domain = settings.dkim.domain.lower()
    dkim_misses = [d for d in from_domains if not dmarc_aligned(dkim_domain, d)]
    findings = []
    if settings.dkim.enabled:
        signer = f"d={_with_organisations([dkim_domain])}"
        if dkim_misses:
            sentence = (
                f"{signer} is not of the organisation of From "
                f"{_with_organisations(dkim_misses)}: DMARC ignores the signature."
            )
            findings.append(Finding(Status.FAIL, "DKIM alignment", sentence))
        else:
            findings.append(Finding(Status.OK, "DKIM alignment", f"{signer} aligns with {froms}."))
    envelope = f"the return path's {_with_organisations([envelope_domain(settings)])}"
    spf_misses = [d for d in from_domains if not dmarc_aligned(envelope_domain(settings), d)]
    misaligned = f"{envelope} is not of the organisation of From {_with_organisations(spf_misses)}"
    if not spf_misses:
        findings.append(Finding(Status.OK, "SPF alignment", f"{envelope} aligns with {froms}."))
    elif settings.dkim.enabled and not dkim_misses:
        sentence = f"{misaligned}: DMARC rests on DKIM alone."
        findings.append(Finding(Status.WARN, "SPF alignment", sentence))
    else:
        sentence = f"{misaligned}, nor is a DKIM d=: DMARC fails."
        findings.append(Finding(Status.FAIL, "SPF alignment", sentence))
    return findings


def _with_organisations(domains: list[str]) -> str:
    """`example.org`, or `news.example.co.uk (example.co.uk)` when it is a subdomain."""
    described = []
    for domain in domains:
        organisation = organisational_domain(domain)
        described.append(domain if organisation == domain else f"{domain} ({organisation})")
    return ", ".join(described)


def _dkim(settings: Settings, key_file: KeyFile | None, records: Records | None) -> list[Finding]:
    dkim = settings.dkim
    if not dkim.enabled:
        return [
            Finding(
                Status.WARN,
                "DKIM",
                "dkim.domain is empty: mail leaves unsigned unless the relay signs it, and Gmail "
                "and Yahoo require DKIM of bulk senders (`newsletter dkim keygen`).",
            )
        ]
    if key_file is None:
        return [Finding(Status.WARN, "DKIM key", f"{dkim.key_path} was not read.")]
    if key_file.pem is None:
        return [Finding(Status.FAIL, "DKIM key", key_file.problem)]
    key_finding, usable = _key_strength(str(dkim.key_path), key_file.pem)
    if not usable:
        return [key_finding]
    name = dns_record_name(dkim.selector, dkim.domain)
    ours = DnsRecord(name, "TXT", dns_record_value(key_file.pem))
    return [key_finding, _dkim_record(ours, records)]


def _key_strength(path: str, pem: bytes) -> tuple[Finding, bool]:
    """The key's finding, and whether it can sign at all (as the signer judges it)."""
    try:
        bits = key_size(pem, path)
    except ConfigError as exc:
        return Finding(Status.FAIL, "DKIM key", f"{exc}."), False
    # RFC 8301: signers should use 2048 bits.
    if bits < 2048:
        sentence = f"{path} is a {bits}-bit RSA key: it passes, 2048 bits are recommended."
        return Finding(Status.WARN, "DKIM key", sentence), True
    return Finding(Status.OK, "DKIM key", f"{path} is a {bits}-bit RSA key."), True


def _dkim_record(ours: DnsRecord, records: Records | None) -> Finding:
    if records is None:
        return Finding(Status.TODO, "DKIM record", "publish our public key:", ours)
    published = [r for r in _published(records, ours.name) if "p" in _tags(r)]
    if not published:
        sentence = f"nothing at {ours.name}: receivers cannot check a signature."
        return Finding(Status.FAIL, "DKIM record", sentence, ours)
    if len(published) > 1:
        sentence = f"{ours.name} has {len(published)} key records; it must have one."
        return Finding(Status.FAIL, "DKIM record", sentence, ours)
    their_key = "".join(_tags(published[0])["p"].split())
    our_key = _tags(ours.value)["p"]
    if their_key == our_key:
        return Finding(Status.OK, "DKIM record", f"{ours.name} publishes our public key.")
    if not their_key:
        sentence = f"{ours.name} publishes a revoked key (empty p=): every signature fails."
        return Finding(Status.FAIL, "DKIM record", sentence, ours)
    # Where the two keys part: their first characters are the same DER header for any key.
    pairs = zip(their_key, our_key, strict=False)
    at = next((i for i, (theirs, mine) in enumerate(pairs) if theirs != mine), len(our_key))
    sentence = (
        f"{ours.name} publishes another key: p=…{their_key[at : at + 12]}… where ours has "
        f"p=…{our_key[at : at + 12]}… (from character {at + 1}); every signature fails."
    )
    return Finding(Status.FAIL, "DKIM record", sentence, ours)


def _spf(settings: Settings, records: Records | None) -> Finding:
    domain, host = envelope_domain(settings), settings.smtp.host
    if not host:
        todo = f"{domain} needs an SPF record authorising your relay, once smtp.host names it."
        record = None
    elif _is_local(host):
        todo = (
            f"{domain} needs an SPF record authorising this machine's public address "
            "(v=spf1 ip4:<address> ~all), which the local relay sends from."
        )
        record = None
    else:
        todo = (
            f"{domain} must authorise the relay {host}: a:{host} does if it sends from its own "
            "address, else use the include: its provider documents."
        )
        record = DnsRecord(domain, "TXT", f"v=spf1 a:{host} ~all")
    if records is None:
        return Finding(Status.TODO, "SPF record", todo, record)
    published = [r for r in _published(records, domain) if re.match(r"v=spf1(\s|$)", r, re.I)]
    if not published:
        return Finding(Status.FAIL, "SPF record", f"none published: {todo}", record)
    if len(published) > 1:
        sentence = (
            f"{domain} has {len(published)} v=spf1 records, a permanent error to receivers "
            "(RFC 7208, 4.5): merge them into one."
        )
        return Finding(Status.FAIL, "SPF record", sentence)
    relay = f"; it must authorise {host}" if host else ""
    return Finding(Status.OK, "SPF record", f'{domain} publishes "{published[0]}"{relay}.')


def _dmarc(settings: Settings, records: Records | None) -> list[Finding]:
    return [_dmarc_of(org, records) for org in _from_organisations(settings)]


def _dmarc_name(organisation: str) -> str:
    return f"_dmarc.{organisation}"


def _dmarc_of(organisation: str, records: Records | None) -> Finding:
    name = _dmarc_name(organisation)
    reports = f"dmarc-reports@{organisation}"
    start = DnsRecord(name, "TXT", f"v=DMARC1; p=none; rua=mailto:{reports}")
    if records is None:
        sentence = (
            f"start with p=none: nothing is refused, and daily reports go to {reports} (create "
            "it); once they show all your mail passing, move to p=quarantine."
        )
        return Finding(Status.TODO, "DMARC record", sentence, start)
    published = [
        r for r in _published(records, name) if re.match(r"v\s*=\s*DMARC1\s*(;|$)", r, re.I)
    ]
    if not published:
        sentence = f"nothing at {name}: Gmail and Yahoo refuse bulk mail without DMARC."
        return Finding(Status.FAIL, "DMARC record", sentence, start)
    if len(published) > 1:
        sentence = f"{name} has {len(published)} DMARC records: receivers ignore them all."
        return Finding(Status.FAIL, "DMARC record", sentence)
    policy = _tags(published[0]).get("p", "").lower()
    if policy not in _DMARC_POLICIES:
        sentence = f'{name} has no valid p= in "{published[0]}": receivers ignore it.'
        return Finding(Status.FAIL, "DMARC record", sentence, start)
    sentence = f"{name} publishes p={policy}"
    if policy == "none":
        sentence += ", reports only: tighten it once they show all your mail passing"
    return Finding(Status.OK, "DMARC record", f"{sentence}.")


def _published(records: Records, name: str) -> list[str]:
    # DNS names match without regard to case; the records come keyed in lower case.
    return records.get(name.lower().rstrip("."), [])


def _tags(record: str) -> dict[str, str]:
    """A DKIM or DMARC tag list (`v=DKIM1; k=rsa; p=...`) as a dict with lower-case keys."""
    pairs = (part.partition("=") for part in record.split(";") if "=" in part)
    return {key.strip().lower(): value.strip() for key, _, value in pairs}
