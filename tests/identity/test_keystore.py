"""Keystore: round trip, errors, tampering, permissions, crash safety."""

from __future__ import annotations

import copy
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from argon2.low_level import Type, hash_secret_raw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.crypto import aead
from mycelium.identity import keystore as ks
from mycelium.identity.identity import Identity
from mycelium.identity.keystore import (
    KdfParams,
    KeystoreCorrupt,
    KeystoreError,
    KeystoreExists,
    KeystoreNotFound,
    UnsupportedKeystore,
    WrongPassphrase,
    create_keystore,
    load_keystore,
    read_public,
)

from .conftest import load_vectors

FAST = KdfParams.insecure_fast()
SHARED_TMP = [HealthCheck.function_scoped_fixture]
VEC = load_vectors("identity-keystore.json")


def _write_vector(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "keystore.json"
    path.write_text(json.dumps(doc))
    return path


def test_vector_loads_and_is_independently_decryptable(tmp_path: Path) -> None:
    path = _write_vector(tmp_path, VEC["keystore"])
    ident = load_keystore(path, VEC["passphrase"])
    assert ident.seed.hex() == VEC["seed_hex"]
    assert read_public(path).name == "vector"
    kdf, cipher = VEC["keystore"]["kdf"], VEC["keystore"]["cipher"]
    okm = hash_secret_raw(
        VEC["passphrase"].encode(), bytes.fromhex(kdf["salt"]), time_cost=kdf["time_cost"],
        memory_cost=kdf["memory_kib"], parallelism=kdf["parallelism"], hash_len=64, type=Type.ID,
    )
    assert okm[32:].hex() == VEC["keystore"]["check"]
    seed = aead.decrypt(okm[:32], bytes.fromhex(cipher["nonce"]),
                        bytes.fromhex(cipher["ciphertext"]), bytes.fromhex(VEC["aad_hex"]))
    assert seed.hex() == VEC["seed_hex"]


@pytest.mark.parametrize("edit", VEC["tamper"], ids=lambda e: "/".join(e["path"]))
def test_vector_tampering(tmp_path: Path, edit: dict[str, Any]) -> None:
    doc = copy.deepcopy(VEC["keystore"])
    node = doc
    for key in edit["path"][:-1]:
        node = node[key]
    node[edit["path"][-1]] = edit["value"]
    path = _write_vector(tmp_path, doc)
    with pytest.raises(KeystoreError) as info:
        load_keystore(path, VEC["passphrase"])
    assert info.value.reason == edit["reason"]


def test_round_trip_mode_and_public(tmp_path: Path) -> None:
    path = tmp_path / "home" / "keystore.json"
    ident = create_keystore(path, "pässwörd", name="Ana", kdf=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keystore(path, "pässwörd") == ident
    pub = read_public(path)
    assert (pub.did, pub.peer_id, pub.name) == (ident.did, ident.peer_id, "Ana")
    assert ident.seed.hex() not in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["keystore.json"]


def test_passphrase_is_nfc_normalized(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    ident = create_keystore(path, "caf\u00e9", kdf=FAST)
    assert load_keystore(path, "cafe\u0301") == ident


def test_given_seed_and_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    ident = create_keystore(path, "pw", seed=b"\x09" * 32, kdf=FAST)
    assert ident == Identity.from_seed(b"\x09" * 32)
    before = path.read_bytes()
    with pytest.raises(KeystoreExists):
        create_keystore(path, "pw", kdf=FAST)
    assert path.read_bytes() == before


def test_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, "right", kdf=FAST)
    with pytest.raises(WrongPassphrase) as info:
        load_keystore(path, "wrong")
    assert info.value.reason == "wrong_passphrase"


def test_missing_and_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(KeystoreNotFound):
        load_keystore(tmp_path / "nope.json", "pw")
    with pytest.raises(KeystoreNotFound):
        read_public(tmp_path / "nope.json")
    with pytest.raises(KeystoreError) as info:
        create_keystore(tmp_path / "k.json", "", kdf=FAST)
    assert info.value.reason == "empty_passphrase"


def test_env_switch_selects_fast_params(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ks.FAST_KDF_ENV, raising=False)
    assert KdfParams.default() == KdfParams(3, 64 * 1024, 1)
    monkeypatch.setenv(ks.FAST_KDF_ENV, "1")
    assert KdfParams.default() == FAST


@pytest.mark.parametrize("field", ["did", "peer_id"])
def test_public_part_swapped_for_another_identity(tmp_path: Path, field: str) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, "pw", kdf=FAST)
    other = Identity.generate()
    doc = json.loads(path.read_text())
    doc["public"]["did"], doc["public"]["peer_id"] = other.did, other.peer_id
    path.write_text(json.dumps(doc))
    assert read_public(path).did == other.did  # readable, but …
    with pytest.raises(KeystoreCorrupt):  # … the lie is caught at load
        load_keystore(path, "pw")
    doc["public"][field] = Identity.generate().did if field == "did" else "12D3KooWbad"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreCorrupt):
        read_public(path)


@settings(max_examples=25, deadline=None, suppress_health_check=SHARED_TMP)
@given(cut=st.integers(min_value=0))
def test_truncated_file_is_corrupt(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "k.json"
    if not path.exists():
        create_keystore(path, "pw", kdf=FAST)
    full = path.read_bytes().rstrip()  # cutting only trailing whitespace is no truncation
    bad = tmp_path / "bad.json"
    bad.write_bytes(full[: cut % len(full)])
    with pytest.raises(KeystoreCorrupt):
        load_keystore(bad, "pw")


@settings(max_examples=60, deadline=None, suppress_health_check=SHARED_TMP)
@given(pos=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_any_byte_change_never_yields_another_identity(tmp_path: Path, pos: int, byte: int) -> None:
    path = tmp_path / "k.json"
    if not path.exists():
        create_keystore(path, "pw", seed=b"\x01" * 32, kdf=FAST)
    raw = bytearray(path.read_bytes())
    raw[pos % len(raw)] = byte
    bad = tmp_path / "bad.json"
    bad.write_bytes(bytes(raw))
    try:
        ident = load_keystore(bad, "pw")
    except KeystoreError:
        return
    assert ident.seed == b"\x01" * 32  # e.g. whitespace changes are harmless


def test_oversized_and_non_json(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (ks.MAX_FILE_BYTES + 1))
    with pytest.raises(KeystoreCorrupt):
        load_keystore(big, "pw")
    for content in (b"\xff\xfe", b"[]", b'{"format": "other"}'):
        big.write_bytes(content)
        with pytest.raises(KeystoreCorrupt):
            read_public(big)


def test_bad_kdf_params_refused_before_work(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedKeystore):
        create_keystore(tmp_path / "k.json", "pw", kdf=KdfParams(1, 8, 4))
    assert not (tmp_path / "k.json").exists()


def test_failed_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise OSError("disk pulled")

    monkeypatch.setattr(ks.os, "replace", boom)
    monkeypatch.setattr(ks.os, "link", boom)
    with pytest.raises(OSError, match="disk pulled"):
        create_keystore(tmp_path / "k.json", "pw", kdf=FAST)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="disk pulled"):
        ks.write_atomic(tmp_path / "f", b"data")
    assert list(tmp_path.iterdir()) == []


def test_no_clobber_publish_is_atomic(tmp_path: Path) -> None:
    """A keystore that appears between the exists-check and the publish is kept."""
    path = tmp_path / "k.json"
    path.write_bytes(b"someone else's keystore")
    with pytest.raises(KeystoreExists):
        ks.write_atomic(path, b"ours", overwrite=False)
    assert path.read_bytes() == b"someone else's keystore"
    assert [p.name for p in tmp_path.iterdir()] == ["k.json"]


def test_failed_fsync_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    ks.write_atomic(path, b"old")
    monkeypatch.setattr(ks.os, "fsync", lambda _fd: (_ for _ in ()).throw(OSError("io")))
    with pytest.raises(OSError):
        ks.write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


_WRITER = """
import sys
from pathlib import Path
from mycelium.identity.keystore import write_atomic
path = Path(sys.argv[1])
blobs = [Path(p).read_bytes() for p in sys.argv[2:]]
print("ready", flush=True)
i = 0
while True:
    write_atomic(path, blobs[i % 2])
    i += 1
"""


@pytest.mark.timeout(30)
def test_sigkill_during_rewrites_never_leaves_a_partial_keystore(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    create_keystore(a, "pw", seed=b"\x02" * 32, name="x" * 100, kdf=FAST)
    create_keystore(b, "pw", seed=b"\x03" * 32, kdf=FAST)
    target = tmp_path / "live" / "keystore.json"
    valid = {a.read_bytes(), b.read_bytes()}
    for delay in (0.01, 0.03, 0.07, 0.11):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target), str(a), str(b)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if target.exists():
            assert target.read_bytes() in valid
            assert load_keystore(target, "pw").seed in (b"\x02" * 32, b"\x03" * 32)


def test_change_passphrase_keeps_identity_and_name(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    original = create_keystore(path, "old words", name="Ana", kdf=FAST)
    before = path.read_bytes()
    assert ks.change_passphrase(path, "old words", "new words", kdf=FAST).did == original.did
    assert load_keystore(path, "new words").seed == original.seed
    assert read_public(path).name == "Ana"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(WrongPassphrase):
        load_keystore(path, "old words")
    doc_before, doc_after = json.loads(before), json.loads(path.read_bytes())
    assert doc_before["kdf"]["salt"] != doc_after["kdf"]["salt"]  # fresh salt and nonce
    assert doc_before["cipher"]["nonce"] != doc_after["cipher"]["nonce"]


def test_change_passphrase_with_wrong_old_one_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    create_keystore(path, "old words", kdf=FAST)
    before = path.read_bytes()
    with pytest.raises(WrongPassphrase):
        ks.change_passphrase(path, "not it", "new words", kdf=FAST)
    assert path.read_bytes() == before
