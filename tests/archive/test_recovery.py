"""Lost device + guardian recovery + ``archive pull``: the diary comes back, no relay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .cli import PASSPHRASE, run

DIARY = {"title": "seeds", "body": "planted the beans by the south fence", "mood": "hopeful"}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYCELIUM_INSECURE_FAST_KDF", "1")
    monkeypatch.setenv("MYCELIUM_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("MYCELIUM_HOME", raising=False)


def _recover(tmp_path: Path, owner_did: str, owner: Path, new_device: Path) -> None:
    """guardians setup on the owner's device, then the recovery flow on ``new_device``."""
    guardians = [tmp_path / f"g{i}" for i in range(3)]
    gdids = [run("init", "--home", str(g), "--json")["did"] for g in guardians]
    package = run("guardians", "setup", "--threshold", "2", *gdids, "--home", str(owner),
                  "--json")["package"]
    start = run("recover", "start", owner_did, "--home", str(new_device), "--json")
    approvals = [run("recover", "approve", start["request"], "--package", package,
                     "--code", start["code"], "--home", str(g), "--json")["approval"]
                 for g in guardians[:2]]
    assert run("recover", "finish", *approvals, "--home", str(new_device),
               "--json")["did"] == owner_did


def test_recovered_device_restores_the_diary_from_the_cid(tmp_path: Path, ipfs_api: str) -> None:
    owner, new_device = tmp_path / "owner", tmp_path / "new"
    created = run("init", "--home", str(owner), "--json")
    run("doc", "put", "personal", "diary", "2026-12-01", "--data", json.dumps(DIARY),
        "--home", str(owner))
    cid = run("archive", "push", "personal", "--ipfs-api", ipfs_api, "--home", str(owner),
              "--json")["cid"]
    # The device is lost; guardians rebuild the identity on a new one.
    _recover(tmp_path, created["did"], owner, new_device)
    pulled = run("archive", "pull", cid, "--ipfs-api", ipfs_api, "--home", str(new_device),
                 "--json")
    assert pulled["kind"] == "personal" and pulled["space_id"] == created["personal_space"]
    assert pulled["rejected"] == 0 and pulled["accepted"] == pulled["envelopes"]
    doc = run("doc", "get", "personal", "diary", "2026-12-01", "--home", str(new_device),
              "--json")["doc"]
    assert {k: doc[k] for k in DIARY} == DIARY
    # The restored device writes on: its chain continues the archived one.
    run("doc", "put", "personal", "diary", "2026-12-06", "--data", json.dumps(DIARY),
        "--home", str(new_device))
    listed = run("doc", "list", "personal", "diary", "--home", str(new_device), "--json")
    assert sorted(d["_id"] for d in listed["docs"]) == ["2026-12-01", "2026-12-06"]


def test_someone_else_cannot_open_a_personal_archive(tmp_path: Path, ipfs_api: str) -> None:
    owner, other = tmp_path / "owner", tmp_path / "other"
    run("init", "--home", str(owner), "--json")
    run("init", "--home", str(other), "--json")
    run("doc", "put", "personal", "diary", "d", "--data", json.dumps(DIARY), "--home", str(owner))
    cid = run("archive", "push", "personal", "--ipfs-api", ipfs_api, "--home", str(owner),
              "--json")["cid"]
    assert "not a reader" in run("archive", "pull", cid, "--ipfs-api", ipfs_api,
                                 "--home", str(other), ok=False)


def test_device_that_wrote_first_merges_the_archive(tmp_path: Path, ipfs_api: str) -> None:
    """A recovered device that writes before restoring starts its own device chain
    (protocols/delta.md §8), so the archive's history merges instead of forking."""
    owner, new_device = tmp_path / "owner", tmp_path / "new"
    created = run("init", "--home", str(owner), "--json")
    run("doc", "put", "personal", "diary", "d", "--data", json.dumps(DIARY), "--home", str(owner))
    cid = run("archive", "push", "personal", "--ipfs-api", ipfs_api, "--home", str(owner),
              "--json")["cid"]
    _recover(tmp_path, created["did"], owner, new_device)
    run("doc", "put", "personal", "diary", "other", "--data", json.dumps(DIARY),
        "--home", str(new_device))
    pulled = run("archive", "pull", cid, "--ipfs-api", ipfs_api, "--home", str(new_device),
                 "--json")
    assert pulled["rejected"] == 0 and pulled["accepted"] == pulled["envelopes"]
    listed = run("doc", "list", "personal", "diary", "--home", str(new_device), "--json")
    assert sorted(d["_id"] for d in listed["docs"]) == ["d", "other"]
