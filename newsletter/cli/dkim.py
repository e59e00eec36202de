"""`newsletter dkim keygen`, and the DKIM check that commands sending mail make first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from newsletter.addresses import dmarc_aligned
from newsletter.cli.app import config_file, dkim_app, err, out, settings
from newsletter.config import DkimSettings, Settings
from newsletter.dkim import (
    MAX_KEY_BITS,
    MIN_KEY_BITS,
    DkimSigner,
    dns_record_name,
    dns_record_value,
    generate_private_key,
    txt_strings,
)
from newsletter.errors import NewsletterError


def check_dkim(config: Settings) -> None:
    """Stop with one line when [dkim] is on and its key cannot sign; warn when its domain
    is not the From domain nor a parent of it, since DMARC then does not count the
    signature (`newsletter doctor` checks the rest)."""
    if not config.dkim.enabled:
        return
    DkimSigner.from_settings(config.dkim)
    if not dmarc_aligned(config.dkim.domain, config.sender.domain):
        err.print(
            f"warning: dkim.domain {config.dkim.domain} is neither sender.address's domain "
            f"({config.sender.domain}) nor a parent of it, so DMARC may not count the "
            "signature; `newsletter doctor` says more",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@dkim_app.command("keygen")
def keygen(
    selector: Annotated[
        str, typer.Option(help="Names the key in DNS (s=); a new one for each new key, e.g. 2026a")
    ],
    domain: Annotated[
        str | None,
        typer.Option(help="The signing domain (d=); by default the domain of sender.address"),
    ] = None,
    bits: Annotated[
        int, typer.Option(min=MIN_KEY_BITS, max=MAX_KEY_BITS, help="RSA key size")
    ] = 2048,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the key; by default var/dkim/<selector>.pem"),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a key already at that path")] = False,
) -> None:
    """Make a DKIM key; print the DNS record to publish and the config lines to add."""
    config = settings()
    wanted = _checked_names(selector, domain or config.sender.domain)
    path = out_path or config.var_dir / "dkim" / f"{wanted.selector}.pem"
    if path.exists() and not force:
        raise NewsletterError(
            f"{path} already exists; pass --force to replace it (its DNS record then stops "
            "matching it: to change keys, make one under a new --selector instead)"
        )
    pem = generate_private_key(bits)
    _write_private(path, pem)

    name = dns_record_name(wanted.selector, wanted.domain)
    quoted = " ".join(f'"{part}"' for part in txt_strings(dns_record_value(pem)))
    lines = [
        f"Wrote a {bits}-bit RSA key to {path} (readable by its owner only).",
        "",
        "1. Publish this TXT record in the DNS of " + wanted.domain + ":",
        f"   name:  {name}",
        f"   value: {quoted}",
        "   (the value is cut into quoted strings of at most 255 characters, as DNS needs;",
        "   DNS joins them again. Some DNS providers' forms take the unquoted text whole.)",
        "",
        f"2. Once `dig +short TXT {name}` shows it, add to {config_file()}:",
        "   [dkim]",
        f'   domain = "{wanted.domain}"',
        f'   selector = "{wanted.selector}"',
        f'   key_path = "{_as_configured(path)}"',
    ]
    if not dmarc_aligned(wanted.domain, config.sender.domain):
        lines += [
            "",
            f"Note: {wanted.domain} is neither {config.sender.domain} (sender.address) nor a "
            "parent of it, so DMARC may not count this signature.",
        ]
    out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


def _checked_names(selector: str, domain: str) -> DkimSettings:
    """The selector and domain as [dkim] would take them, or one line saying why not."""
    if not selector.strip():
        raise NewsletterError("--selector: must not be empty")
    try:
        return DkimSettings(domain=domain, selector=selector, key_path=Path("unused"))
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + str(first["loc"][0]) if first["loc"] else "the options"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise NewsletterError(f"{option}: {message} (got {first['input']!r})") from None


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path`, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    incomplete = path.with_name(path.name + ".tmp")
    incomplete.unlink(missing_ok=True)
    # Created 0600 from the start, so the key is never readable by others, even briefly.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    with os.fdopen(os.open(incomplete, flags, 0o600), "wb") as file:
        file.write(data)
    os.replace(incomplete, path)  # never half a key at `path`


def _as_configured(path: Path) -> str:
    """`path` as key_path should say it: relative to the config file's folder if inside."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(config_file().resolve().parent))
    except ValueError:
        return str(absolute)
