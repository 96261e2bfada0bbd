"""Publisher keys and signatures (shoal/signing.py): the policy a host applies to a
manifest before it fetches a byte: signed by a key it trusts for that name, for this
manifest, not older than the version it last took."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from shoal.errors import BadInput, OutputExists
from shoal.manifest import Manifest
from shoal.publishing.publish import PublishOptions, publish
from shoal.publishing.sources import directory_source
from shoal.ref import ModelRef
from shoal.signing import (
    MAX_SIGNATURE,
    PublicKey,
    Signature,
    TrustedKey,
    TrustError,
    accept,
    keygen,
    load_private,
    sign,
)
from shoal.testing import write_model_dir


def model(tmp: Path, ref: str, seed: int = 1) -> Manifest:
    src = write_model_dir(tmp / f"src-{seed}-{ref.replace('/', '_')}", {"w.bin": 1000}, seed=seed)
    out = tmp / f"pub-{seed}-{ref.replace('/', '_').replace(':', '-')}"
    return publish(directory_source(src), PublishOptions(ref=ModelRef.parse(ref), out=out)).manifest


@pytest.fixture
def acme(tmp_path: Path) -> tuple[Path, PublicKey]:
    return tmp_path / "acme.key", keygen(tmp_path / "acme.key")


def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_public_line(
    acme: tuple[Path, PublicKey],
) -> None:
    path, public = acme
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    line = path.with_name("acme.key.pub").read_text()
    assert PublicKey.parse(line) == public and line.startswith("shoal-ed25519 ")
    with pytest.raises(OutputExists):
        keygen(path)
    path.chmod(0o644)
    with pytest.raises(BadInput, match="readable by others"):
        load_private(path)


def test_a_signature_round_trips_and_verifies(tmp_path: Path, acme: tuple[Path, PublicKey]) -> None:
    m = model(tmp_path, "acme/tiny:1")
    s = sign(m, load_private(acme[0]), now=1_800_000_000)
    data = s.to_wire()
    assert len(data) <= MAX_SIGNATURE
    back = Signature.from_wire(data)
    assert back == s and back.valid() and back.key == acme[1]
    trusted = (TrustedKey(acme[1], ("acme/*",)),)
    assert accept(m.ref, m, [data], trusted, None) == s


def test_a_forged_manifest_is_refused_naming_the_model_and_reason(
    tmp_path: Path, acme: tuple[Path, PublicKey]
) -> None:
    real, forged = model(tmp_path, "acme/tiny:1"), model(tmp_path, "acme/tiny:1", seed=2)
    s = sign(real, load_private(acme[0]))
    trusted = (TrustedKey(acme[1], ("acme/*",)),)
    with pytest.raises(TrustError, match=r"refused acme/tiny:1 .*signed another manifest"):
        accept(forged.ref, forged, [s.to_wire()], trusted, None)
    # the signature rewritten to name the forged manifest: it no longer verifies
    lie = dataclasses.replace(s, manifest=forged.digest)
    with pytest.raises(TrustError, match="does not verify: forged"):
        accept(forged.ref, forged, [lie.to_wire()], trusted, None)
    with pytest.raises(TrustError, match="unsigned"):
        accept(real.ref, real, [], trusted, None)


def test_a_key_trusted_for_acme_cannot_sign_library(
    tmp_path: Path, acme: tuple[Path, PublicKey]
) -> None:
    lib = model(tmp_path, "library/llama:1")
    s = sign(lib, load_private(acme[0]))
    with pytest.raises(TrustError, match="not trusted for library/llama"):
        accept(lib.ref, lib, [s.to_wire()], (TrustedKey(acme[1], ("acme/*",)),), None)
    other = keygen(tmp_path / "other.key")
    with pytest.raises(TrustError, match="is not trusted here"):
        accept(lib.ref, lib, [s.to_wire()], (TrustedKey(other),), None)
    assert accept(lib.ref, lib, [s.to_wire()], (TrustedKey(acme[1], ("library/*",)),), None)


def test_a_rollback_to_an_older_signed_manifest_is_refused(
    tmp_path: Path, acme: tuple[Path, PublicKey]
) -> None:
    m = model(tmp_path, "acme/tiny:latest")
    old = sign(m, load_private(acme[0]), now=1_000)
    trusted = (TrustedKey(acme[1]),)
    with pytest.raises(TrustError, match="rollback"):
        accept(m.ref, m, [old.to_wire()], trusted, newest=2_000)
    assert accept(m.ref, m, [old.to_wire()], trusted, newest=1_000) == old


def test_a_manifest_served_under_another_models_name_is_refused(
    tmp_path: Path, acme: tuple[Path, PublicKey]
) -> None:
    m = model(tmp_path, "acme/tiny:1")
    s = sign(m, load_private(acme[0]))
    with pytest.raises(TrustError, match="manifest of another model"):
        accept(ModelRef.parse("acme/other:1"), m, [s.to_wire()], (TrustedKey(acme[1]),), None)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80", b"\xc1" * 10, b"x" * (MAX_SIGNATURE + 1), b"\x81\xa1v\x01"],
)
def test_malformed_signatures_are_refused(data: bytes) -> None:
    with pytest.raises(BadInput):
        Signature.from_wire(data)


def test_trusted_key_entries(tmp_path: Path, acme: tuple[Path, PublicKey]) -> None:
    line = acme[1].line()
    assert TrustedKey.parse(f"{line} acme/*,hf.co/acme/*").patterns == ("acme/*", "hf.co/acme/*")
    from_file = TrustedKey.parse("acme.key.pub library/*", base=tmp_path)
    assert from_file.key == acme[1] and from_file.patterns == ("library/*",)
    assert TrustedKey.parse(line).covers(ModelRef.parse("hf.co/x/y:main"))
    for bad in ("shoal-ed25519 AAAA", "ssh-ed25519 AAAA", "missing.pub"):
        with pytest.raises(BadInput):
            TrustedKey.parse(bad, base=tmp_path)
