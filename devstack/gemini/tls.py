"""Self-signed TLS material for the offline server.

google-genai rewrites any base_url to wss:// when an API key is set, so the server
must speak TLS. Clients trust it through SSL_CERT_FILE, which *replaces* the trust
store; the bundle we write is therefore certifi's public roots plus our certificate,
so the process's other TLS connections keep working.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca_bundle: Path


def local_addresses(extra_hosts: tuple[str, ...] = ()) -> tuple[set[str], set[ipaddress._BaseAddress]]:
    """DNS names and IPs this machine answers on, for the certificate's SAN."""
    names = {"localhost"}
    ips: set[ipaddress._BaseAddress] = {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    hostname = socket.gethostname()
    if hostname:
        names.add(hostname)
    try:
        # Resolving our own name stays on this machine (hosts file / local resolver).
        for info in socket.getaddrinfo(hostname, None):
            ips.add(ipaddress.ip_address(info[4][0].split("%")[0]))
    except OSError:
        pass
    ips |= _interface_ipv4s()
    for host in extra_hosts:
        try:
            ips.add(ipaddress.ip_address(host))
        except ValueError:
            if host:
                names.add(host)
    return names, ips


def _interface_ipv4s() -> set[ipaddress._BaseAddress]:
    """IPv4 of every interface, via ioctl (Linux); empty elsewhere."""
    found: set[ipaddress._BaseAddress] = set()
    try:
        import fcntl
        import struct

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _, name in socket.if_nameindex():
                try:
                    req = struct.pack("256s", name.encode()[:15])
                    res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR
                    found.add(ipaddress.ip_address(socket.inet_ntoa(res[20:24])))
                except OSError:
                    continue
    except (ImportError, OSError, AttributeError):
        pass
    return found


def generate(cert_path: Path, key_path: Path, bundle_path: Path, extra_hosts: tuple[str, ...] = ()) -> TlsFiles:
    """Write a fresh self-signed certificate, its key and a CA bundle trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    names, ips = local_addresses(extra_hosts)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "offline-gemini")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName(n) for n in sorted(names)] + [x509.IPAddress(ip) for ip in sorted(ips, key=str)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        # CA:TRUE lets strict verifiers accept it as its own trust anchor.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    for p in (cert_path, key_path, bundle_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    roots = Path(certifi.where()).read_bytes()
    bundle_path.write_bytes(roots.rstrip(b"\n") + b"\n" + cert_pem)
    return TlsFiles(cert_path, key_path, bundle_path)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx
