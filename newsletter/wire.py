"""A message's bytes as SMTP DATA carries them, settled once where the message is built.

DATA needs CRLF line ends and every line that starts with "." doubled at its start (RFC
5321 §4.5.2, "dot-stuffing"); the server removes the added dot again. aiosmtplib does both
with a regular expression over the whole message, on every message it sends. Here they are
done where the bytes are made: a compiled lesson settles its shared chunks once, and only
the few per-recipient parts are looked at per message (newsletter/render.py), so a message
goes out with no pass over its whole body (newsletter/delivery/transport.py).

`prepare(data)` is the general form, for bytes built anywhere else. What it gives is what
aiosmtplib would send for the same `data`: every lone CR and lone LF becomes CRLF, a CRLF
ends the message, and then a dot goes before every line that starts with one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CRLF = b"\r\n"
_LINE_END = re.compile(rb"\r\n|\r|\n")


def settled(data: bytes) -> bool:
    """Whether every CR and LF in `data` is part of a CRLF pair (nothing to settle)."""
    # Each CRLF holds one CR and one LF; any other CR or LF would make a count differ.
    pairs = data.count(CRLF)
    return data.count(b"\r") == pairs and data.count(b"\n") == pairs


def settle_line_ends(data: bytes) -> bytes:
    """`data` with every lone CR and every lone LF made a CRLF; `data` itself when none."""
    return data if settled(data) else _LINE_END.sub(CRLF, data)


def stuff(data: bytes, *, line_start: bool = True) -> bytes:
    """Settled `data` with a dot added before every line that starts with one; `data`
    itself when none does. `line_start`: whether `data` begins a line of the message."""
    lead = line_start and data[:1] == b"."
    if not lead and b"\n." not in data:
        return data
    stuffed = data.replace(b"\n.", b"\n..")
    return b"." + stuffed if lead else stuffed


@dataclass(frozen=True, slots=True)
class Prepared:
    """One message settled for DATA. `stuffed` is `message` itself when no line of it
    starts with a dot, which is the usual case."""

    message: bytes  #: CRLF line ends only, ending with CRLF: what the server stores
    stuffed: bytes  #: `message` dot-stuffed: what DATA sends before its final ".\r\n"

    def with_field(self, field: bytes) -> Prepared:
        """The message with a header field (already CRLF-ended, e.g. DKIM-Signature) in
        front of it."""
        head = prepare(field)
        message = head.message + self.message
        if head.stuffed is head.message and self.stuffed is self.message:
            return Prepared(message, message)
        return Prepared(message, head.stuffed + self.stuffed)


def prepare(data: bytes) -> Prepared:
    """Any message's bytes, settled: what aiosmtplib's DATA would make of them."""
    message = settle_line_ends(data)
    if not message.endswith(CRLF):
        message += CRLF
    return Prepared(message, stuff(message))
