"""Key material for the Salesforce sandbox: a self-signed TLS certificate and a JWT signing key pair.

Salesforce only speaks HTTPS and simple-salesforce builds `https://` URLs itself, so the sandbox
serves TLS on 127.0.0.1 with a certificate the client trusts through `ca_file`. The JWT bearer
flow needs a key pair: the connected app holds the certificate (public key), the connector the
private key file. Both are generated once per process (RSA generation costs ~0.1 s).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class KeyMaterial:
    cert_pem: bytes  # TLS certificate for 127.0.0.1 / localhost (also the CA to trust)
    key_pem: bytes  # its private key
    jwt_private_pem: bytes  # the connector's JWT signing key
    jwt_public_pem: bytes  # what the connected app verifies with


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@lru_cache(maxsize=1)
def key_material() -> KeyMaterial:
    tls_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "htcds-connector salesforce sandbox")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(tls_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(tls_key, hashes.SHA256())
    )
    jwt_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyMaterial(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_private_pem(tls_key),
        jwt_private_pem=_private_pem(jwt_key),
        jwt_public_pem=jwt_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )


def write_key_files(directory: Path) -> dict[str, Path]:
    """Write the certificate, TLS key and JWT private key into `directory` (mode 0600)."""
    material = key_material()
    paths = {"ca_file": directory / "sandbox-ca.pem", "tls_key": directory / "sandbox-tls-key.pem", "private_key": directory / "jwt-private-key.pem"}
    for key, content in (("ca_file", material.cert_pem), ("tls_key", material.key_pem), ("private_key", material.jwt_private_pem)):
        paths[key].write_bytes(content)
        paths[key].chmod(0o600)
    return paths
