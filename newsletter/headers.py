"""Header values -> RFC 5322 header lines: refused if they hold control characters,
RFC 2047 encoded words where they are not plain ASCII, folded at 78 characters.

The standard library's folding is not used: on a short value it returns non-ASCII text
unencoded (policy.SMTP, refold_source="long"), which is how a curly apostrophe in a subject
used to break the message, and it is too slow for the per-recipient To header.
"""

from __future__ import annotations

import base64
import re

from newsletter.errors import RenderError

LINE_MAX = 78  #: RFC 5322 2.1.1: "SHOULD be no more than 78 characters"
_WORD_MAX = 75  # RFC 2047 2: an encoded word is at most 75 characters
_CHARSET = "utf-8"
_OVERHEAD = len(f"=?{_CHARSET}?q??=")

# Cc (C0, DEL, C1) but tab, which is whitespace; lone surrogates; the Unicode line and
# paragraph separators: in a header, each either ends the line or cannot be encoded at all.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")
_CONTROL_BUT_LINE_BREAKS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_NAMES = {"\n": "line feed", "\r": "carriage return", "\x00": "NUL", "\x1b": "escape"}
# Printable ASCII words between single spaces: text that can go into a header as it is.
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
# RFC 2047 5(3): the only characters a Q-encoded word may keep inside a phrase. The
# strictest of its rules, so the same words serve Subject, display names and List-Id.
_Q_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_KEEP_BYTES = bytes(sorted(_Q_KEEP))
_Q = tuple(
    chr(byte) if byte in _Q_KEEP else "_" if byte == 0x20 else f"={byte:02X}" for byte in range(256)
)


def control_character(text: str, *, line_breaks: bool = False) -> str | None:
    """The first control character in `text`, named for a person ('U+000D carriage
    return'), or None. Tabs are whitespace, not controls; with `line_breaks`, CR, LF and
    the Unicode line separators are allowed too (multi-line fields)."""
    match = (_CONTROL_BUT_LINE_BREAKS if line_breaks else _CONTROL).search(text)
    if match is None:
        return None
    char = match.group()
    name = _CONTROL_NAMES.get(char, "")
    return f"U+{ord(char):04X}{' ' + name if name else ''}"


def unstructured(name: str, value: str) -> str:
    """`Name: value` with CRLF, for Subject and other free text: folded at spaces when the
    value is plain ASCII, as a run of encoded words otherwise (exact for any text)."""
    _refuse_control(name, value)
    budget = LINE_MAX - len(name) - 2
    if _is_plain(value) and all(len(word) <= budget for word in value.split(" ")):
        return fold(name, value.split(" "))
    return fold(name, _encoded_words(value, budget))


def mailbox(name: str, display_name: str, address: str) -> str:
    """`Name: display name <address>` with CRLF; the bare address when there is no name."""
    _refuse_control(name, display_name)
    return fold(name, [*_display_name(display_name), f"<{address}>" if display_name else address])


def list_id(title: str, label: str) -> str:
    """RFC 2919 `List-Id: phrase <label>`; the phrase is the course title."""
    _refuse_control("List-Id", title)
    words = title.split(" ")
    if _is_plain(title) and all(_ATEXT.fullmatch(word) for word in words):
        phrase = words
    else:
        # Encoded words for anything else, even ASCII with specials: an RFC 2047 phrase
        # decodes to exactly the title, where a quoted string would keep its quotes for the
        # many readers that treat List-Id as free text.
        phrase = _encoded_words(title, LINE_MAX - len("List-Id: "))
    return fold("List-Id", [*phrase, f"<{label}>"])


def fold(name: str, tokens: list[str]) -> str:
    """Join tokens with spaces into `Name: ...` lines of at most LINE_MAX characters,
    breaking before a token (CRLF SP) only where a line would grow too long."""
    lines = []
    line = f"{name}:"
    for index, token in enumerate(tokens):
        if index and len(line) + 1 + len(token) > LINE_MAX:
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _display_name(name: str) -> list[str]:
    if not name:
        return []
    if _is_plain(name):
        words = name.split(" ")
        if all(_ATEXT.fullmatch(word) for word in words):
            return words
        # A quoted string may be folded at its spaces: unfolding restores them.
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}"'.split(" ")
    # One encoded word, however long. RFC 2047 allows a run of them, whitespace between
    # adjacent ones being insignificant, but the standard library's address parser keeps
    # that whitespace (CPython 3.11), so a split name would come back with spaces inside.
    data = name.encode("utf-8")
    return [_encoded_word(data, _q_is_shorter(data))]


def _is_plain(text: str) -> bool:
    # "=?" would make a reader try to decode the text as an encoded word.
    return bool(_PLAIN.fullmatch(text)) and "=?" not in text


def _refuse_control(name: str, value: str) -> None:
    if found := control_character(value):
        raise RenderError(f"the {name} header cannot hold a control character ({found})")


def _encoded_words(text: str, first_max: int) -> list[str]:
    """The text as RFC 2047 encoded words (Q or B, whichever is shorter), split between
    characters, never inside one: the first at most `first_max` characters long, so it fits
    after the header name, the others at most 75."""
    if not text:
        return []
    use_q = _q_is_shorter(text.encode("utf-8"))
    words: list[str] = []
    budget = min(first_max, _WORD_MAX) - _OVERHEAD
    current: list[bytes] = []
    size = 0  # Q: encoded characters so far; B: bytes so far
    for char in text:
        encoded = char.encode("utf-8")
        grown = size + (sum(len(_Q[byte]) for byte in encoded) if use_q else len(encoded))
        if current and (grown if use_q else _base64_length(grown)) > budget:
            words.append(_encoded_word(b"".join(current), use_q))
            budget = _WORD_MAX - _OVERHEAD
            current, grown = [], grown - size
        current.append(encoded)
        size = grown
    words.append(_encoded_word(b"".join(current), use_q))
    return words


def _q_is_shorter(data: bytes) -> bool:
    # Kept bytes take one character, a space too ("_"), every other byte three ("=XX").
    escaped = len(data.translate(None, _Q_KEEP_BYTES)) - data.count(b" ")
    return len(data) + 2 * escaped <= _base64_length(len(data))


def _base64_length(size: int) -> int:
    return 4 * -(-size // 3)


def _encoded_word(data: bytes, use_q: bool) -> str:
    if use_q:
        return f"=?{_CHARSET}?q?{''.join(map(_Q.__getitem__, data))}?="
    return f"=?{_CHARSET}?b?{base64.b64encode(data).decode('ascii')}?="
