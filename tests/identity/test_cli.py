"""CLI: init / id / id convert / guardians / recover across several homes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from libp2p.peer.id import ID
from typer.testing import CliRunner

from mycelium.cli import app
from mycelium.identity.didkey import public_key_from_did

runner = CliRunner()
W3C_DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
SECP_DID = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYCELIUM_INSECURE_FAST_KDF", "1")
    monkeypatch.setenv("MYCELIUM_PASSPHRASE", "correct horse")
    monkeypatch.delenv("MYCELIUM_HOME", raising=False)


def run(*args: str, ok: bool = True) -> Any:
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout) if "--json" in args else result.stdout
    assert result.exit_code != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_init_then_id_agrees_with_py_libp2p(tmp_path: Path) -> None:
    created = run("init", "--name", "Ana", "--home", str(tmp_path), "--json")
    shown = run("id", "--home", str(tmp_path), "--json")
    assert set(shown) == {"did", "peer_id"}
    assert shown["did"] == created["did"] and shown["did"].startswith("did:key:z6Mk")
    extracted = ID.from_base58(shown["peer_id"]).extract_public_key()
    assert extracted is not None and extracted.to_bytes() == public_key_from_did(shown["did"])
    assert stat.S_IMODE((tmp_path / "keystore.json").stat().st_mode) == 0o600
    assert "did:key:" in run("id", "--home", str(tmp_path))


def test_id_needs_no_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("init", "--home", str(tmp_path), "--json")
    monkeypatch.delenv("MYCELIUM_PASSPHRASE")
    assert run("id", "--home", str(tmp_path), "--json")["did"]


def test_init_refuses_second_time_and_id_without_keystore(tmp_path: Path) -> None:
    run("init", "--home", str(tmp_path), "--json")
    assert "already" in run("init", "--home", str(tmp_path), ok=False)
    assert "mycelium init" in run("id", "--home", str(tmp_path / "empty"), ok=False)


def test_id_convert_both_ways(tmp_path: Path) -> None:
    did = W3C_DID
    out = run("id", "convert", did, "--json")
    assert out["output"] == out["peer_id"] == "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    back = run("id", "convert", out["peer_id"], "--json")
    assert back["output"] == did
    assert run("id", "convert", did).strip() == out["peer_id"]
    err = run("id", "convert", SECP_DID, ok=False)
    assert "secp256k1" in err


def test_wrong_passphrase_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("init", "--home", str(tmp_path), "--json")
    monkeypatch.setenv("MYCELIUM_PASSPHRASE", "nope")
    assert "wrong passphrase" in run(
        "guardians", "setup", "--threshold", "1", W3C_DID,
        "--home", str(tmp_path), ok=False,
    )


def test_guardian_round_trip_across_four_homes(tmp_path: Path) -> None:
    owner, new_device = tmp_path / "owner", tmp_path / "new"
    guardians = [tmp_path / f"g{i}" for i in range(3)]
    owner_did = run("init", "--home", str(owner), "--json")["did"]
    gdids = [run("init", "--home", str(g), "--json")["did"] for g in guardians]

    setup = run("guardians", "setup", "--threshold", "2", *gdids, "--home", str(owner), "--json")
    package = Path(setup["package"])
    assert package.parent == owner / "guardians" and package.exists()

    start = run("recover", "start", owner_did, "--home", str(new_device), "--json")
    request = Path(start["request"])
    assert request.parent == new_device / "recovery"

    approvals = []
    for g in guardians[:2]:
        out = run("recover", "approve", str(request), "--package", str(package),
                  "--code", start["code"], "--home", str(g), "--json")
        approvals.append(out["approval"])

    err = run("recover", "finish", approvals[0], "--home", str(new_device), ok=False)
    assert "2 of 3 guardian approvals needed, got 1" in err

    done = run("recover", "finish", *approvals, "--home", str(new_device), "--json")
    assert done["did"] == owner_did
    assert run("id", "--home", str(new_device), "--json")["did"] == owner_did
    assert not (new_device / "recovery" / "pending.json").exists()


def test_recover_errors(tmp_path: Path) -> None:
    owner, g = tmp_path / "owner", tmp_path / "g"
    owner_did = run("init", "--home", str(owner), "--json")["did"]
    gdid = run("init", "--home", str(g), "--json")["did"]
    assert "already has an identity" in run("recover", "start", owner_did, "--home", str(owner),
                                            ok=False)
    assert "recover start" in run("recover", "finish", "x", "--home", str(tmp_path / "n"), ok=False)
    setup = run("guardians", "setup", "-k", "1", gdid, "--home", str(owner), "--json")
    start = run("recover", "start", owner_did, "--home", str(tmp_path / "n"), "--json")
    assert "code mismatch" in run("recover", "approve", start["request"], "--package",
                                  setup["package"], "--code", "AAAA-BBBB", "--home", str(g),
                                  ok=False)
    # The owner is not a guardian of their own package.
    assert "not a guardian" in run("recover", "approve", start["request"], "--package",
                                   setup["package"], "--code", start["code"],
                                   "--home", str(owner), ok=False)
    assert "threshold" in run("guardians", "setup", "-k", "3", gdid, "--home", str(owner),
                              ok=False)


@pytest.mark.timeout(60)
def test_installed_console_script(tmp_path: Path) -> None:
    """The real ``mycelium`` entry point: init, id --json, one-line errors, exit codes."""
    exe = Path(sys.executable).parent / "mycelium"  # installed by setup.sh: never skipped
    env = {**os.environ, "MYCELIUM_INSECURE_FAST_KDF": "1", "MYCELIUM_PASSPHRASE": "pw"}

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args, "--home", str(tmp_path)], env=env,
                              capture_output=True, text=True, timeout=30, check=False)

    assert call("init", "--json").returncode == 0
    shown = call("id", "--json")
    assert shown.returncode == 0
    data = json.loads(shown.stdout)
    assert ID.from_base58(data["peer_id"]).extract_public_key() is not None
    again = call("init")
    assert again.returncode != 0 and again.stderr.count("\n") == 1


def test_id_passphrase_changes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    did = run("init", "--home", str(tmp_path), "--json")["did"]
    monkeypatch.setenv("MYCELIUM_NEW_PASSPHRASE", "battery staple")
    out = run("id", "passphrase", "--home", str(tmp_path), "--json")
    assert out == {"did": did, "keystore": str(tmp_path / "keystore.json"), "changed": True}
    # the old passphrase no longer opens it, the new one does (and the store still opens)
    assert "wrong passphrase" in run("id", "passphrase", "--home", str(tmp_path), ok=False)
    monkeypatch.setenv("MYCELIUM_PASSPHRASE", "battery staple")
    monkeypatch.setenv("MYCELIUM_NEW_PASSPHRASE", "")
    assert "empty" in run("id", "passphrase", "--home", str(tmp_path), ok=False)
    assert run("space", "list", "--home", str(tmp_path), "--json")
