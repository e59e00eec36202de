"""`newsletter doctor`: a deployment's mail authentication on one screen; with --dns, the
records it publishes are looked up and compared."""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.text import Text

from newsletter.cli.app import Fail, JsonOption, app, out, settings
from newsletter.cli.terminal import literal, print_json
from newsletter.config import Settings
from newsletter.dkim import load_private_key
from newsletter.doctor import Finding, KeyFile, Status, diagnose, names_to_look_up
from newsletter.errors import ConfigError

#: One try at a server, and all tries for one name: doctor answers in seconds, not minutes.
DNS_TRY_TIMEOUT_S = 2.0
DNS_LIFETIME_S = 4.0

_STYLES = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.TODO: "cyan",
}


class DnsUnanswered(Exception):
    """No resolver answered; the message is one line saying which and how."""


@app.command("doctor")
def doctor_command(
    dns: Annotated[
        bool, typer.Option("--dns", help="Look up the published SPF, DKIM and DMARC records")
    ] = False,
    dns_server: Annotated[
        str | None,
        typer.Option(
            "--dns-server",
            metavar="HOST[:PORT]",
            help="Ask this DNS server instead of the system resolver (implies --dns)",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the deployment's mail authentication (https links, postal address, return path,
    SPF, DKIM, DMARC) and say which DNS records to publish. Exits 1 when anything fails."""
    config = settings()
    server = _parse_server(dns_server) if dns_server else None
    records: dict[str, list[str]] | None = None
    dns_report: dict[str, Any] | None = None
    if dns or server:
        where = f"{server[0]}:{server[1]}" if server else "the system resolver"
        dns_report = {"server": where, "answered": True, "problem": ""}
        try:
            records = look_up_txt(names_to_look_up(config), server)
        except DnsUnanswered as exc:
            dns_report |= {"answered": False, "problem": str(exc)}
    findings = diagnose(config, records=records, key_file=read_key_file(config))

    if as_json:
        print_json(
            {
                "ok": not _failed(findings),
                "dns": dns_report,
                "findings": [asdict(finding) for finding in findings],
            }
        )
    else:
        _print_report(config, findings, dns_report)
    if _failed(findings):
        raise Fail


def read_key_file(config: Settings) -> KeyFile | None:
    if not config.dkim.enabled or config.dkim.key_path is None:
        return None
    try:
        return KeyFile(load_private_key(config.dkim.key_path))
    except ConfigError as exc:
        return KeyFile(None, str(exc))


def look_up_txt(names: list[str], server: tuple[str, int] | None) -> dict[str, list[str]]:
    """Each name's TXT records, each record's strings joined ([] when there are none)."""
    # Imported here: dnspython is only needed by --dns, and every other command starts faster.
    import dns.exception
    import dns.resolver

    where = f"{server[0]}:{server[1]}" if server else "the system resolver"
    try:
        resolver = dns.resolver.Resolver(configure=server is None)
    except dns.resolver.NoResolverConfiguration:
        raise DnsUnanswered("no system resolver is configured (try --dns-server)") from None
    if server is not None:
        resolver.nameservers = [server[0]]
        resolver.port = server[1]
    resolver.timeout = DNS_TRY_TIMEOUT_S
    resolver.lifetime = DNS_LIFETIME_S

    records: dict[str, list[str]] = {}
    for name in names:
        try:
            answer = resolver.resolve(name, "TXT", search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            records[name] = []
            continue
        except dns.exception.Timeout:
            raise DnsUnanswered(
                f"no answer from {where} within {DNS_LIFETIME_S:g} s (asking for {name})"
            ) from None
        except dns.exception.DNSException as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DnsUnanswered(f"{where} gave no usable answer for {name}: {first_line}") from None
        records[name] = [
            b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.rrset or ()
        ]
    return records


def _parse_server(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6] or [IPv6]:PORT, as an IP address (dnspython takes no names)."""
    host, port_text = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") or port_text
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise typer.BadParameter(f"{port_text!r} is not a port number", param_hint="--dns-server")
    port = int(port_text)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0]
    except (socket.gaierror, UnicodeError):
        raise typer.BadParameter(f"cannot resolve {host!r}", param_hint="--dns-server") from None
    return str(address), port


def _failed(findings: list[Finding]) -> bool:
    return any(finding.status is Status.FAIL for finding in findings)


def _print_report(
    config: Settings, findings: list[Finding], dns_report: dict[str, Any] | None
) -> None:
    if dns_report is None:
        source = "from config alone; --dns compares with what DNS publishes"
    elif dns_report["answered"]:
        source = f"DNS as {dns_report['server']} answers"
    else:
        source = f"DNS unanswered: {dns_report['problem']}; these need no DNS"
    out.print(Text.assemble("Mail from ", literal(config.sender.address), f" ({source})"))
    width = max(len(finding.subject) for finding in findings)
    for finding in findings:
        out.print(
            Text.assemble(
                (f"{finding.status:<4}", _STYLES[finding.status]),
                "  ",
                literal(finding.subject.ljust(width)),
                "  ",
                literal(finding.sentence),
            )
        )
        if finding.record is not None:
            record = finding.record
            out.print(
                Text.assemble(
                    " " * (width + 8), literal(f"{record.name}  {record.type}  {record.value}")
                )
            )
    counts = Counter(finding.status for finding in findings)
    out.print(", ".join(f"{counts[status]} {status}" for status in Status if counts[status]))
