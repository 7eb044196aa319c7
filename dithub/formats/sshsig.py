"""SSH signatures (``ssh-keygen -Y sign`` / ``-Y verify``; OpenSSH's PROTOCOL.sshsig), written with
the ``cryptography`` package: what signed commits carry, so a signature made by dithub verifies with
``ssh-keygen -Y verify`` and one made by ``ssh-keygen -Y sign`` verifies in dithub.

The signed data is ``"SSHSIG" || string(namespace) || string("") || string("sha512") ||
string(SHA-512(message))``; the signature blob is ``"SSHSIG" || uint32(1) || string(public key) ||
string(namespace) || string("") || string("sha512") || string(signature)``, armored in base64
between ``-----BEGIN SSH SIGNATURE-----`` and ``-----END SSH SIGNATURE-----``. Keys: Ed25519,
ECDSA (nistp256/384/521) and RSA (rsa-sha2-512), in OpenSSH's formats. ``allowed_signers`` reads
ssh-keygen's ALLOWED SIGNERS file (principals, options, key; ``namespaces="..."`` honoured).
"""
from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput

MAGIC = b"SSHSIG"
BEGIN, END = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"
NAMESPACE = "dithub"
"""The namespace dithub signs commits in (git signs in ``git``): a signature made for another use
never verifies as a commit's."""
MAX_SIGNATURE_BYTES = 16 << 10
"""An armored signature longer than this is not read (RSA-16384 fits)."""


class SignatureError(BadInput):
    """A signature that does not verify, or a key that cannot sign."""


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def string(self) -> bytes:
        if self.at + 4 > len(self.data):
            raise SignatureError("the signature is truncated")
        n = int.from_bytes(self.data[self.at : self.at + 4], "big")
        start, self.at = self.at + 4, self.at + 4 + n
        if self.at > len(self.data):
            raise SignatureError("the signature is truncated")
        return self.data[start : self.at]

    def uint32(self) -> int:
        if self.at + 4 > len(self.data):
            raise SignatureError("the signature is truncated")
        self.at += 4
        return int.from_bytes(self.data[self.at - 4 : self.at], "big")


def _mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8 or 1, "big")  # a leading zero keeps it positive
    return _string(raw)


def _signed_data(message: bytes, namespace: str) -> bytes:
    return MAGIC + _string(namespace.encode()) + _string(b"") + _string(b"sha512") + _string(hashlib.sha512(message).digest())


def public_key_line(key: object) -> str:
    """``type base64`` of a public key (as an allowed-signers line or ``.pub`` file holds it)."""
    from cryptography.hazmat.primitives import serialization

    raw: bytes = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)  # type: ignore[attr-defined]
    return raw.decode()


def load_private_key(path: str | Path) -> object:
    """An unencrypted OpenSSH (or PEM) private key; SignatureError naming the file otherwise."""
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SignatureError(f"signing key {path}: {exc.strerror or exc}", "give a private key file (ssh-keygen -t ed25519)") from None
    try:
        try:
            return serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SignatureError(f"signing key {path} is encrypted", "dithub reads unencrypted keys only: use a key without a "
                             "passphrase kept for signing, with its file readable by you alone") from None
    except (ValueError, binascii.Error) as exc:
        raise SignatureError(f"signing key {path} is not an SSH private key: {exc}") from None


def sign(message: bytes, key: object, namespace: str = NAMESPACE) -> str:
    """The armored SSH signature of ``message`` by private ``key`` in ``namespace``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    data = _signed_data(message, namespace)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig = _string(b"ssh-ed25519") + _string(key.sign(data))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        bits = {"secp256r1": (256, hashes.SHA256()), "secp384r1": (384, hashes.SHA384()), "secp521r1": (521, hashes.SHA512())}
        if key.curve.name not in bits:
            raise SignatureError(f"ECDSA on {key.curve.name} is not an SSH signature curve")
        size, digest = bits[key.curve.name]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        sig = _string(f"ecdsa-sha2-nistp{size}".encode()) + _string(_mpint(r) + _mpint(s))
    elif isinstance(key, rsa.RSAPrivateKey):
        sig = _string(b"rsa-sha2-512") + _string(key.sign(data, padding.PKCS1v15(), hashes.SHA512()))
    else:
        raise SignatureError(f"keys of type {type(key).__name__} cannot sign", "use an Ed25519, ECDSA or RSA key")
    public = base64.b64decode(public_key_line(key.public_key()).split()[1])
    blob = (MAGIC + (1).to_bytes(4, "big") + _string(public) + _string(namespace.encode()) + _string(b"")
            + _string(b"sha512") + _string(sig))
    text = base64.b64encode(blob).decode()
    return "\n".join([BEGIN, *(text[i : i + 70] for i in range(0, len(text), 70)), END]) + "\n"


def verify(message: bytes, armored: str, namespace: str = NAMESPACE) -> str:
    """The signer's public key (``type base64``) if ``armored`` is a valid SSH signature of
    ``message`` in ``namespace``; SignatureError otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if len(armored) > MAX_SIGNATURE_BYTES:
        raise SignatureError("the signature is longer than any SSH signature")
    lines = [line.strip() for line in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        raise SignatureError("not an armored SSH signature")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError("the signature is not valid base64") from None
    if not blob.startswith(MAGIC):
        raise SignatureError("not an SSH signature (no SSHSIG magic)")
    r = _Reader(blob[len(MAGIC):])
    if r.uint32() != 1:
        raise SignatureError("an SSH signature of an unknown version")
    public, ns, _reserved, hash_alg, sig = r.string(), r.string(), r.string(), r.string(), r.string()
    if ns.decode(errors="replace") != namespace:
        raise SignatureError(f"the signature is for namespace {ns.decode(errors='replace')!r}, not {namespace!r}")
    if hash_alg not in (b"sha512", b"sha256"):
        raise SignatureError(f"the signature hashes with {hash_alg.decode(errors='replace')}, which SSH signatures do not use")
    digest = (hashlib.sha512 if hash_alg == b"sha512" else hashlib.sha256)(message).digest()
    data = MAGIC + _string(ns) + _string(b"") + _string(hash_alg) + _string(digest)
    kind = _Reader(public).string().decode(errors="replace")
    line = f"{kind} {base64.b64encode(public).decode()}"
    try:
        key = serialization.load_ssh_public_key(line.encode())
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"the signature's public key is not usable: {exc}") from None
    s = _Reader(sig)
    sig_kind, raw = s.string().decode(errors="replace"), s.string()
    try:
        if isinstance(key, ed25519.Ed25519PublicKey) and sig_kind == "ssh-ed25519":
            key.verify(raw, data)
        elif isinstance(key, ec.EllipticCurvePublicKey) and sig_kind.startswith("ecdsa-sha2-nistp"):
            digests = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}
            inner = _Reader(raw)
            r_, s_ = int.from_bytes(inner.string(), "big"), int.from_bytes(inner.string(), "big")
            key.verify(encode_dss_signature(r_, s_), data, ec.ECDSA(digests[key.curve.key_size]))
        elif isinstance(key, rsa.RSAPublicKey) and sig_kind in ("rsa-sha2-512", "rsa-sha2-256"):
            key.verify(raw, data, padding.PKCS1v15(), hashes.SHA512() if sig_kind == "rsa-sha2-512" else hashes.SHA256())
        else:
            raise SignatureError(f"a {sig_kind} signature by a {kind} key")
    except InvalidSignature:
        raise SignatureError("the signature does not match the signed bytes (they changed, or another key signed)") from None
    return line


@dataclass(frozen=True)
class AllowedSigner:
    principals: tuple[str, ...]
    key: str
    """``type base64``."""
    namespaces: tuple[str, ...] | None = None


def allowed_signers(path: str | Path) -> list[AllowedSigner]:
    """The lines of an ssh-keygen ALLOWED SIGNERS file (comments and blank lines skipped;
    ``cert-authority`` lines refused: certificates are not read)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadInput(f"allowed signers file {path}: {exc.strerror or exc}") from None
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        principals, _, rest = line.partition(" ")
        fields = rest.split()
        namespaces = None
        while fields and not _is_key_type(fields[0]):
            option = fields.pop(0)
            name, _, value = option.partition("=")
            if name.lower() == "namespaces":
                namespaces = tuple(v.strip() for v in value.strip('"').split(","))
            elif name.lower() == "cert-authority":
                raise BadInput(f"{path}:{n}: cert-authority lines are not supported", "list each signer's own key")
        if len(fields) < 2:
            raise BadInput(f"{path}:{n}: not 'principals [options] keytype key'")
        out.append(AllowedSigner(tuple(p for p in principals.split(",") if p), f"{fields[0]} {fields[1]}", namespaces))
    return out


def _is_key_type(word: str) -> bool:
    return word.startswith(("ssh-", "ecdsa-sha2-", "sk-"))


def signer_of(key: str, signers: list[AllowedSigner], namespace: str = NAMESPACE) -> tuple[str, ...]:
    """The principals allowed to sign with ``key`` in ``namespace`` (empty: an untrusted key)."""
    found: list[str] = []
    for s in signers:
        if s.key.split()[:2] == key.split()[:2] and (s.namespaces is None or any(fnmatch.fnmatchcase(namespace, p) for p in s.namespaces)):
            found.extend(s.principals)
    return tuple(found)
