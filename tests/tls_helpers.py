"""Throwaway TLS material for tests that run a real TLS server or proxy on loopback: one
certificate builder and PEM writer for them all."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Key = ec.EllipticCurvePrivateKey


def certificate(
    name: str,
    *,
    issuer: tuple[Key, x509.Certificate] | None = None,
    ca: bool = False,
    loopback: bool = False,
) -> tuple[Key, x509.Certificate]:
    """A P-256 key and a certificate for ``name``, valid for a day: self-signed, or signed by
    ``issuer`` (its key and certificate); ``ca`` makes it a CA, ``loopback`` names 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer, issuer_name = (key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    if loopback:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return key, builder.sign(signer, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_pair(cert_path: Path, key_path: Path, name: str = "fedqi.test") -> None:
    """A self-signed certificate for ``name`` and its key, as PEM files."""
    key, cert = certificate(name)
    cert_path.write_bytes(cert_pem(cert))
    key_path.write_bytes(key_pem(key))
