"""``mycelium space …`` through the real console script (subprocess), as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MYCELIUM = Path(sys.executable).with_name("mycelium")



def run(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYCELIUM_PASSPHRASE": "x", "MYCELIUM_INSECURE_FAST_KDF": "1"}
    env.pop("MYCELIUM_HOME", None)
    proc = subprocess.run([str(MYCELIUM), *args, "--home", str(home)], capture_output=True,
                          text=True, env=env, timeout=60)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def js(home: Path, *args: str) -> dict[str, Any]:
    out = run(home, *args, "--json").stdout
    data: dict[str, Any] = json.loads(out)
    return data


def space(listing: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in listing["spaces"] if s["name"] == name)


@pytest.mark.slow
def test_create_invite_join_remove_list_and_errors(tmp_path: Path) -> None:
    homes = {n: tmp_path / n for n in "abc"}
    dids = {}
    for n, home in homes.items():
        run(home, "init", "--name", n)
        dids[n] = js(home, "id")["did"]
    a, b = homes["a"], homes["b"]

    space_id = js(a, "space", "create", "market")["space_id"]
    assert len(bytes.fromhex(space_id)) == 32
    code = js(a, "space", "invite", "market", dids["b"])["invite"]
    assert code.startswith("z")
    assert js(b, "space", "join", code)["space_id"] == space_id

    mine = space(js(a, "space", "list"), "market")
    assert mine["role"] == "admin" and mine["kind"] == "community"
    assert set(mine["members"]) == {dids["a"], dids["b"]}
    theirs = space(js(b, "space", "list"), "market")
    assert theirs["role"] == "member" and theirs["space_id"] == space_id
    assert theirs["epoch"] == mine["epoch"] != 0

    js(a, "space", "invite", space_id, dids["c"])
    run(a, "space", "remove", "market", dids["c"])
    after = space(js(a, "space", "list"), "market")
    assert dids["c"] not in after["members"] and after["epoch"] != mine["epoch"]
    # a key nobody certified yet, revoked by an admin: pinned at nothing
    stranger = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    assert js(a, "space", "revoke", "market", stranger)["keep"] == 0

    # User mistakes: one line on stderr, non-zero exit, no traceback.
    for home, args in ((b, ("space", "invite", "market", dids["c"])),       # b is no admin
                       (a, ("space", "join", "zNotACode")),
                       (a, ("space", "invite", "nosuchspace", dids["b"])),
                       (a, ("space", "remove", "market", "did:key:zBad")),
                       (b, ("space", "revoke", "market", dids["a"]))):      # a member
        proc = run(home, *args, ok=False)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
