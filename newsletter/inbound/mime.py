"""Reading mail that may be broken or hostile: its parts without recursion, header text
with 8-bit bytes and RFC 2047 words, the field blocks of report parts, any charset, and a
hash of what relays leave alone. Never raises on bad content; the parser may, on
pathological structure, which callers catch."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator
from email.message import Message

#: A header block: lower-case field name -> its values, in order.
Fields = dict[str, list[str]]


#: Parts looked at: a message of more is hostile, and its first parts say what it is.
_PARTS_MAX = 200


def parts(message: Message) -> Iterator[Message]:
    """The message and its parts, depth first, without recursion and without entering a
    quoted message (message/rfc822): its parts are the original's, not the report's."""
    stack = [message]
    for _ in range(_PARTS_MAX):
        if not stack:
            return
        part = stack.pop()
        yield part
        payload = part.get_payload()
        if part.get_content_maintype() == "multipart" and isinstance(payload, list):
            stack.extend(sub for sub in reversed(payload) if isinstance(sub, Message))


def parts_of_type(message: Message, types: frozenset[str]) -> list[Message]:
    return [part for part in parts(message) if part.get_content_type() in types]


def report_type(message: Message) -> str:
    value = message.get_param("report-type", "")
    return value.strip().lower() if isinstance(value, str) else ""


def field_blocks(part: Message) -> list[Fields]:
    """A message/delivery-status or /feedback-report part's blocks of fields."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [fields_of(block.raw_items()) for block in payload if isinstance(block, Message)]
    return blocks_in_text(text_of(part))


def blocks_in_text(text: str) -> list[Fields]:
    paragraphs = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    return [fields for fields in map(fields_of, map(field_lines, paragraphs)) if fields]


def field_lines(text: str) -> Iterator[tuple[str, str]]:
    """`Name: value` lines with their continuations, as a header block has them."""
    name, value = "", ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if line[:1] in {" ", "\t"} and name:
            value += " " + line.strip()
            continue
        if name:
            yield name, value
        head, colon, rest = line.partition(":")
        name, value = (head, rest.strip()) if colon and FIELD_NAME.fullmatch(head) else ("", "")
    if name:
        yield name, value


def fields_of(items: Iterable[tuple[str, str]]) -> Fields:
    fields: Fields = {}
    for name, value in items:
        fields.setdefault(name.strip().lower(), []).append(_unescape(value))
    return fields


def first(fields: Fields, name: str) -> str:
    values = fields.get(name)
    return values[0] if values else ""


def header(message: Message, name: str) -> str:
    """The first `name` header as text: unfolded, 8-bit bytes read as UTF-8 (or Latin-1),
    RFC 2047 words left encoded; cut at 16 KiB (nothing we read is longer)."""
    for key, value in message.raw_items():
        if key.strip().lower() == name:
            return _unescape(value[:16384])
    return ""


def _unescape(value: str) -> str:
    """Header text as the parser left it (raw 8-bit bytes as lone surrogates) -> text."""
    data = value.encode("utf-8", "surrogateescape") if _has_surrogates(value) else None
    text = value if data is None else decode(data, "utf-8")
    return " ".join(text.split())


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)


def text_of(part: Message) -> str:
    """A part's content, transfer decoding undone, as text in its declared charset."""
    data = part.get_payload(decode=True)
    return decode(data, part.get_content_charset()) if isinstance(data, bytes) else ""


def body_text(message: Message) -> str:
    """The text of the message's own parts (not of a quoted message's), one after another."""
    texts = []
    for part in parts(message):
        if part.get_content_maintype() == "multipart" and part.is_multipart():
            continue  # its parts come next; a multipart without them is text (no boundary)
        if part.get_content_maintype() in {"text", "multipart"}:
            texts.append(text_of(part))
    return "\n".join(texts)


def decode(data: bytes, charset: str | None) -> str:
    """Bytes -> text in `charset`, else UTF-8, else Latin-1: always some text."""
    for name in (charset, "utf-8"):
        if name:
            try:
                return data.decode(name)
            except (LookupError, UnicodeError, ValueError):
                # An unknown charset, bytes not in it, or a codec that is no text encoding.
                pass
    return data.decode("latin-1")  # every byte is a character: something readable


def decode_words(text: str) -> str:
    """RFC 2047 encoded words -> text; a charset we do not know is read as UTF-8."""
    text = _BETWEEN_WORDS.sub("?==?", text)  # RFC 2047 6.2: that space is not text
    return _ENCODED_WORD.sub(_decode_word, text)


def _decode_word(match: re.Match[str]) -> str:
    charset, encoding, encoded = match.groups()
    if encoding in "bB":
        try:
            data = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            return match.group()
    else:
        data = _QP_ESCAPE.sub(
            lambda hex_pair: bytes.fromhex(hex_pair.group(1).decode()),
            encoded.replace("_", " ").encode("ascii", "replace"),
        )
    return decode(data, charset.partition("*")[0])  # RFC 2231: charset*language


def content_hash(message: Message) -> str:
    """A hash of what a relay leaves alone: Date, From, Subject and the decoded content of
    every part; not Received, Delivered-To or the transfer encoding, which relays change
    (one without 8BITMIME re-encodes 8-bit text, RFC 6152 3)."""
    digest = hashlib.sha256()
    for name in ("date", "from", "subject"):
        digest.update(header(message, name).encode("utf-8", "surrogatepass") + b"\0")
    for part in parts(message):
        payload = part.get_payload()
        if isinstance(payload, list):
            if part.get_content_maintype() != "multipart":  # message/*: its header blocks
                for block in payload:
                    for name, value in block.raw_items() if isinstance(block, Message) else []:
                        if name.strip().lower() == "content-transfer-encoding":
                            continue
                        line = f"{name}: {' '.join(value.split())}\n"
                        digest.update(line.encode("utf-8", "surrogatepass"))
        else:
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                digest.update(b" ".join(data.split()) + b"\0")
    return digest.hexdigest()


def one_line(text: str, limit: int) -> str:
    """Text fit for one line of a record or a terminal: controls out, whitespace collapsed,
    cut to `limit` characters with an ellipsis."""
    line = " ".join(CONTROL.sub(" ", text).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"\?=\s+=\?")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
# C0 and C1 controls, lone surrogates, line separators and bidi controls, which would
# reorder the line an admin reads.
CONTROL = re.compile(
    r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
