"""``mycelium device add`` / ``join`` (issue 12 §2): the identity reaches a second device
without guardians, bound to a one-time code, and the two devices never fork."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mycelium.cli import app
from mycelium.identity import devices
from mycelium.identity.identity import Identity

runner = CliRunner()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYCELIUM_INSECURE_FAST_KDF", "1")
    monkeypatch.setenv("MYCELIUM_PASSPHRASE", "pairing test")
    monkeypatch.delenv("MYCELIUM_HOME", raising=False)


def run(*args: str, ok: bool = True) -> Any:
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return json.loads(result.stdout) if "--json" in args else result.stdout
    assert result.exit_code != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_second_device_joins_with_the_code(tmp_path: Path) -> None:
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    created = run("init", "--home", first, "--json")
    code = run("device", "add", "--home", first, "--json")["code"]
    request = run("device", "join", code.lower(), "--home", second, "--json")["request"]
    grant = run("device", "add", "--request", request, "--home", first, "--json")["grant"]
    joined = run("device", "join", "--grant", grant, "--home", second, "--json")
    assert joined["did"] == created["did"]
    assert joined["personal_space"] == created["personal_space"]
    # The code is spent: a second request cannot get another grant.
    assert "no pairing in progress" in run("device", "add", "--request", request,
                                           "--home", first, ok=False)
    # Both devices write to the personal space, each on its own chain.
    seen = []
    for home, doc in ((first, "a"), (second, "b")):
        run("doc", "put", "personal", "diary", doc, "--data",
            json.dumps({"title": doc, "body": "x"}), "--home", home)
        listed = run("device", "list", "--home", home, "--json")
        (personal,) = [s for s in listed["spaces"] if s["name"] == "personal"]
        assert personal["devices"] == [listed["this_device"]]
        seen.append(listed["this_device"])
    assert seen[0] != seen[1] and created["did"] not in seen


def test_a_request_made_with_another_code_is_refused(tmp_path: Path) -> None:
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    run("init", "--home", first, "--json")
    run("device", "add", "--home", first, "--json")
    request = run("device", "join", devices.new_code(), "--home", second, "--json")["request"]
    err = run("device", "add", "--request", request, "--home", first, ok=False)
    assert "not made with the pairing code" in err
    assert not (tmp_path / "first" / "devices" / "grant.cbor").exists()


def test_grant_checks() -> None:
    owner, code = Identity.generate(), devices.new_code()
    request, temp = devices.make_request(code)
    grant = devices.make_grant(owner, request, code)
    assert devices.accept_grant(grant, code, temp).did == owner.did
    with pytest.raises(devices.WrongCode):  # a grant from someone without the code
        devices.accept_grant(devices.make_grant(Identity.generate(), request, code),
                             devices.new_code(), temp)
    with pytest.raises(devices.PairingError) as exc:  # the grant of another device
        devices.accept_grant(grant, code, devices.make_request(code)[1])
    assert exc.value.reason == "wrong_device"
    with pytest.raises(devices.PairingError):
        devices.normalize_code("ABCD-1234")
    with pytest.raises(devices.PairingError):
        devices.read_request(b"\xa0", code)


def test_device_keys_differ_per_device_id_and_follow_the_seed() -> None:
    owner = Identity.generate()
    one, two = devices.new_device_id(), devices.new_device_id()
    a, b = devices.device_identity(owner, one), devices.device_identity(owner, two)
    assert a.public_key != b.public_key != owner.public_key
    assert devices.device_identity(Identity.from_seed(owner.seed), one).did == a.did
