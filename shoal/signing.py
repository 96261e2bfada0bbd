"""Publisher keys and signatures over manifests (ed25519), and the policy a host applies:
a model is accepted only if a publisher it trusts for that name signed its manifest.

What a signature covers: the manifest's digest (so every chunk digest, both info-hashes,
every path and size, the name and the tag), the name it was signed for, and the time it
was signed (``signed_at``, seconds). ``signed_at`` is the version of a tag: a host
remembers the newest it accepted for each tag and refuses an older one (a rollback),
whoever serves it.

Formats:
- private key: PKCS#8 PEM, mode 0600 (``shoal keygen``);
- public key: one line ``shoal-ed25519 <base64 of 32 bytes> [comment]``;
- signature: canonical msgpack ``{key, manifest, ref, sig, signed_at, v}``, at most
  ``MAX_SIGNATURE`` bytes; the signed bytes are ``payload()``.

A trusted key is a public key with name patterns (``acme/*``, ``hf.co/acme/*``,
``registry.example/team/*``, ``*``), matched against ``host/namespace/name`` and, for
models on the default registry, ``namespace/name`` too. A key trusted for ``acme/*``
cannot sign ``library/*``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from shoal import wire
from shoal.digest import Digest
from shoal.errors import BadInput, IntegrityError, OutputExists
from shoal.manifest import Manifest
from shoal.ref import DEFAULT_HOST, ModelRef

if TYPE_CHECKING:  # cryptography is imported where a key is used: not by every command
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_TYPE = "shoal-ed25519"
MAX_SIGNATURE = 512
MAX_SIGNATURES = 16  # per manifest, one per key
MAX_PATTERNS = 64
_DOMAIN = b"shoal-manifest-signature-v1\n"
_FIELDS = {"key", "manifest", "ref", "sig", "signed_at", "v"}
_LIMITS = wire.Limits(max_body=MAX_SIGNATURE, max_str=256, max_bin=64, max_map=8, max_depth=1)


class TrustError(IntegrityError):
    """A model no trusted publisher vouches for (unsigned, forged, rolled back)."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    raw: bytes  # 32 bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 32:
            raise BadInput("an ed25519 public key is 32 bytes")

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """``shoal-ed25519 BASE64 [comment]``."""
        kind, _, rest = text.strip().partition(" ")
        b64 = rest.strip().split(" ", 1)[0]
        try:
            raw = base64.b64decode(b64, validate=True) if kind == KEY_TYPE else b""
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise BadInput(
                f"not a shoal public key: {text[:60]!r}",
                f"expected '{KEY_TYPE} <base64>' as 'shoal keygen' writes it",
            )
        return cls(raw)

    @property
    def id(self) -> str:
        """A short name for the key: the first 16 hex digits of its SHA-256."""
        return hashlib.sha256(self.raw).hexdigest()[:16]

    def line(self, comment: str = "") -> str:
        text = f"{KEY_TYPE} {base64.b64encode(self.raw).decode()}"
        return f"{text} {comment}".rstrip()

    def verifies(self, sig: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(sig, data)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class Signature:
    manifest: Digest
    ref: ModelRef  # the name signed: the manifest's own
    signed_at: int
    key: PublicKey
    sig: bytes

    def payload(self) -> bytes:
        return _payload(self.manifest, self.ref, self.signed_at)

    def to_wire(self) -> bytes:
        return wire.pack(
            {
                "key": self.key.raw,
                "manifest": self.manifest.raw,
                "ref": str(self.ref),
                "sig": self.sig,
                "signed_at": self.signed_at,
                "v": 1,
            }
        )

    @classmethod
    def from_wire(cls, data: bytes) -> Signature:
        """A signature's bytes, checked in form (not in trust); ``BadInput`` if not one."""
        try:
            doc = wire.unpack(data, _LIMITS)
        except BadInput:
            raise BadInput("a manifest signature is not well-formed msgpack") from None
        if not isinstance(doc, dict) or set(doc) != {
            "key",
            "manifest",
            "ref",
            "sig",
            "signed_at",
            "v",
        }:
            raise BadInput("a manifest signature has other fields than a shoal signature")
        key, digest, ref, sig, at = (doc[k] for k in ("key", "manifest", "ref", "sig", "signed_at"))
        if (
            doc["v"] != 1
            or not isinstance(digest, bytes)
            or len(digest) != 32
            or not isinstance(ref, str)
            or not isinstance(sig, bytes)
            or len(sig) != 64
            or type(at) is not int
            or not 0 <= at < 1 << 40
            or not isinstance(key, bytes)
        ):
            raise BadInput("a manifest signature has a malformed field")
        out = cls(Digest.from_bytes(digest), ModelRef.parse(ref), at, PublicKey(key), sig)
        if out.to_wire() != data:
            raise BadInput("a manifest signature is not in canonical form")
        return out

    def valid(self) -> bool:
        """The signature is the key's over what it says (trust is decided apart)."""
        return self.key.verifies(self.sig, self.payload())


def _payload(digest: Digest, ref: ModelRef, signed_at: int) -> bytes:
    return _DOMAIN + f"{digest}\n{ref}\n{signed_at}\n".encode()


@dataclass(frozen=True, slots=True)
class TrustedKey:
    key: PublicKey
    patterns: tuple[str, ...] = ("*",)

    @classmethod
    def parse(cls, entry: str, base: Path | None = None) -> TrustedKey:
        """``KEY [PATTERN,PATTERN...]``: KEY is a public key line's ``shoal-ed25519
        BASE64``, or the path of a file holding one (relative to ``base``)."""
        text = entry.strip()
        if text.startswith(KEY_TYPE + " "):
            parts = text.split()
            key, rest = PublicKey.parse(" ".join(parts[:2])), parts[2:]
        else:
            path, _, tail = text.partition(" ")
            file = Path(path) if base is None or Path(path).is_absolute() else base / path
            try:
                key = PublicKey.parse(file.read_text())
            except OSError as exc:
                raise BadInput(
                    f"cannot read trusted publisher key {file}: {exc.strerror}"
                ) from None
            rest = tail.split()
        patterns = tuple(p for p in ",".join(rest).split(",") if p) or ("*",)
        if len(patterns) > MAX_PATTERNS or any(len(p) > 200 for p in patterns):
            raise BadInput(f"too many or too long name patterns for key {key.id}")
        return cls(key, patterns)

    def covers(self, ref: ModelRef) -> bool:
        names = [f"{ref.host}/{ref.namespace}/{ref.name}"]
        if ref.host == DEFAULT_HOST:
            names.append(f"{ref.namespace}/{ref.name}")
        return any(fnmatchcase(n, p) for n in names for p in self.patterns)


def sign(manifest: Manifest, private: Ed25519PrivateKey, now: float | None = None) -> Signature:
    from cryptography.hazmat.primitives import serialization

    at = int(time.time() if now is None else now)
    payload = _payload(manifest.digest, manifest.ref, at)
    public = PublicKey(
        private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    )
    return Signature(manifest.digest, manifest.ref, at, public, private.sign(payload))


def keygen(out: Path) -> PublicKey:
    """A new key pair: ``out`` (private, mode 0600) and ``out``.pub; refuses to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub_path = out.with_name(out.name + ".pub")
    for path in (out, pub_path):
        if path.exists():
            raise OutputExists(f"{path} exists", "choose another name; keys are never overwritten")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = PublicKey(
        private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    )
    pub_path.write_text(public.line(out.name) + "\n")
    return public


def load_private(path: Path) -> Ed25519PrivateKey:
    """A private key ``shoal keygen`` wrote; refused if others may read it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read signing key {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise BadInput(
            f"signing key {path} is readable by others (mode {st.st_mode & 0o777:o})",
            f"chmod 600 {path}",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise BadInput(f"{path} is not a private key 'shoal keygen' wrote") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInput(f"{path} is not an ed25519 key")
    return key


def accept(
    asked: ModelRef,
    manifest: Manifest,
    signatures: list[bytes],
    trusted: tuple[TrustedKey, ...],
    newest: int | None,
) -> Signature:
    """The signature that lets this host take ``manifest`` as ``asked``: valid, by a key
    trusted for the name asked and the name signed (one repository), for this manifest,
    and not older than ``newest``, the last version this host accepted for ``asked``;
    else ``TrustError`` saying why."""
    what = f"{asked} (manifest {manifest.digest})"
    if (asked.host, asked.namespace, asked.name) != (
        manifest.ref.host,
        manifest.ref.namespace,
        manifest.ref.name,
    ):
        raise TrustError(f"refused {what}: it is the manifest of another model, {manifest.ref}")
    parsed, problems = [], []
    for data in signatures[:MAX_SIGNATURES]:
        try:
            parsed.append(Signature.from_wire(data))
        except BadInput as exc:
            problems.append(exc.message)
    if not parsed:
        raise TrustError(
            f"refused {what}: it is unsigned",
            "only models a trusted publisher signed are taken here (trusted_publishers)",
        )
    for s in parsed:
        by = next((t for t in trusted if t.key == s.key), None)
        if by is None:
            problems.append(f"key {s.key.id} is not trusted here")
        elif not (by.covers(asked) and by.covers(s.ref)):
            problems.append(f"key {s.key.id} is not trusted for {asked.namespace}/{asked.name}")
        elif s.manifest != manifest.digest or s.ref != manifest.ref:
            problems.append(f"key {s.key.id} signed another manifest ({s.manifest})")
        elif not s.valid():
            problems.append(f"the signature by key {s.key.id} does not verify: forged")
        elif newest is not None and s.signed_at < newest:
            problems.append(
                f"rollback: signed at {s.signed_at}, older than version {newest} "
                "this host already took"
            )
        else:
            return s
    raise TrustError(f"refused {what}: {'; '.join(problems)}")
