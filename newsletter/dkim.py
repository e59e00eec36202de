"""DKIM: keys, the DNS record to publish, and the signature every outgoing message carries.

Canonicalisation, header selection and hashing are dkimpy's; the RSA signature is made by
`cryptography` (OpenSSL) with a key parsed once. dkimpy's own `dkim.sign` does the RSA in
pure Python and parses the key on every call: 11 ms a message on the development machine,
against 1.6 ms this way (docs/benchmarks.md, "DKIM signing"). The dkimpy helpers used here
(rfc822_parse, fold, hash_headers) are outside its __all__: the tests verify every
signature with dkimpy and with Perl's Mail::DKIM, so a change in them shows.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

from newsletter.config import DkimSettings
from newsletter.errors import ConfigError

#: Header fields signed when present, in this order. From is listed once more than it
#: occurs (over-signed), so that a From added in transit breaks the signature.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
    b"feedback-id",
)
OVER_SIGNED = (b"from",)
#: RFC 8301: verifiers must not accept signatures made with RSA keys under 1024 bits.
MIN_KEY_BITS = 1024
MAX_KEY_BITS = 4096
#: One character-string of a DNS TXT record holds at most 255 bytes (RFC 1035, 3.3).
TXT_STRING_MAX = 255
_HEADER_NAME = b"DKIM-Signature"
#: Relaxed headers: relays refold them. Simple body: ours is 7-bit quoted-printable with
#: CRLF line ends and no trailing white space, which relays carry untouched, and relaxed
#: body canonicalisation (dkimpy's, in Python) costs a millisecond for each lesson.
CANONICALIZATION = b"relaxed/simple"
_SIGNATURE_LINE = 72


def generate_private_key(bits: int = 2048) -> bytes:
    """A new RSA private key, as unencrypted PKCS#8 PEM."""
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise ValueError(f"a DKIM key has {MIN_KEY_BITS} to {MAX_KEY_BITS} bits, not {bits}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def dns_record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def dns_record_value(private_key_pem: bytes) -> str:
    """The TXT record's text: the public half of the key (DER SubjectPublicKeyInfo)."""
    public = _parse_rsa_key(private_key_pem, "the key").public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def txt_strings(value: str) -> list[str]:
    """`value` cut into the character-strings of one TXT record: DNS joins them again."""
    return [value[start : start + TXT_STRING_MAX] for start in range(0, len(value), TXT_STRING_MAX)]


def load_private_key(path: Path) -> bytes:
    """The PEM key at `path`, checked to be an RSA key a verifier accepts."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"dkim.key_path: {path} does not exist; make a key with "
            "`newsletter dkim keygen --selector NAME`"
        ) from None
    except OSError as exc:
        raise ConfigError(f"dkim.key_path: {path} cannot be read ({exc.strerror})") from None
    _parse_rsa_key(pem, f"dkim.key_path: {path}")
    return pem


class DkimSigner:
    """Signs messages for one domain and selector; the key is parsed once, here."""

    def __init__(self, domain: str, selector: str, private_key_pem: bytes) -> None:
        self._key = _parse_rsa_key(private_key_pem, "the DKIM key")
        self._domain = domain.encode("ascii")
        self._selector = selector.encode("ascii")
        self._policy = CanonicalizationPolicy.from_c_value(CANONICALIZATION)

    @classmethod
    def from_settings(cls, settings: DkimSettings) -> DkimSigner:
        """The signer [dkim] describes; ConfigError when its key cannot be used."""
        if not settings.enabled or settings.key_path is None:
            raise ConfigError("dkim: no domain is set, so nothing is signed")
        return cls(settings.domain, settings.selector, load_private_key(settings.key_path))

    def sign(self, message: bytes) -> bytes:
        """`message` with a DKIM-Signature header field in front (rsa-sha256,
        relaxed/simple) over its body and the SIGNED_HEADERS it has."""
        return self.signature_field(message) + message

    def signature_field(self, message: bytes) -> bytes:
        """The DKIM-Signature header field that sign() puts in front of `message`."""
        head, blank, body = message.partition(b"\r\n\r\n")
        if not blank:
            raise ValueError("a message to sign needs CRLF line ends and a blank line")
        # Only the head goes through dkimpy's parser, which would split and join the whole
        # body line by line again to give back the same bytes.
        headers, _ = dkim.rfc822_parse(head + blank)
        body_hash = hashlib.sha256(self._policy.canonicalize_body(body)).digest()
        signed = signed_header_names([name for name, _ in headers])
        tags = [
            b"v=1",
            b"a=rsa-sha256",
            b"c=" + CANONICALIZATION,
            b"d=" + self._domain,
            b"s=" + self._selector,
            # Spaces around the colons are folding white space: where the line may break.
            b"h=" + b" : ".join(signed),
            b"bh=" + base64.b64encode(body_hash),
            b"b=",
        ]
        # The field is hashed as it will be sent, with b= empty (RFC 6376, 3.7), so the
        # folding chosen here must not change once the signature is appended.
        unsigned: bytes = dkim.fold(b"; ".join(tags), namelen=len(_HEADER_NAME))
        hasher = hashlib.sha256()
        dkim.hash_headers(
            hasher,
            self._policy,
            self._policy.canonicalize_headers(headers),
            signed,
            (_HEADER_NAME, b" " + unsigned),
            {},
        )
        signature = base64.b64encode(
            self._key.sign(hasher.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        )
        # White space inside b= is ignored by verifiers, so the value folds anywhere.
        folded = b"".join(
            b"\r\n " + signature[start : start + _SIGNATURE_LINE]
            for start in range(0, len(signature), _SIGNATURE_LINE)
        )
        return _HEADER_NAME + b": " + unsigned + folded + b"\r\n"


def signed_header_names(present: list[bytes]) -> list[bytes]:
    """The h= list for a message with these header fields (in any case, repeats kept):
    each field of SIGNED_HEADERS as often as it occurs, From once more."""
    names = [name.lower() for name in present]
    if b"from" not in names:
        raise ValueError("a message without a From header cannot be DKIM-signed")
    listed = [name for name in SIGNED_HEADERS for _ in range(names.count(name))]
    return listed + [name for name in OVER_SIGNED if name in names]


def key_size(pem: bytes, what: str) -> int:
    """The bits of a usable signing key; ConfigError (naming `what`) for any other."""
    return _parse_rsa_key(pem, what).key_size


def _parse_rsa_key(pem: bytes, what: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # it asks for a password
        raise ConfigError(f"{what} is encrypted; DKIM needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{what} is not a PEM RSA private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{what} is not an RSA key (DKIM here signs with rsa-sha256)")
    if key.key_size < MIN_KEY_BITS:
        raise ConfigError(
            f"{what} has {key.key_size} bits; verifiers ignore signatures by keys under "
            f"{MIN_KEY_BITS} bits (RFC 8301), so make one of 2048 with `newsletter dkim keygen`"
        )
    return key
