"""DKIM keys: make one, read one, and the DNS record that publishes its public half."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from newsletter.errors import ConfigError


def load_private_key(path: Path) -> bytes:
    """The PEM private key at `path`, checked to be one."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the DKIM key ({exc.strerror})") from None
    try:
        serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{path}: not an unencrypted PEM private key") from None
    return pem


def dns_record_value(private_key_pem: bytes) -> str:
    """The TXT record of the key's public half (RFC 6376, 3.6.1)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(public_der).decode('ascii')}"


def dns_record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def generate_private_key(bits: int = 2048) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
