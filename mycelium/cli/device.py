"""``mycelium device add`` / ``mycelium device join``: one identity on a second device,
without guardians (protocols/identity.md §8, docs/recovery.md "A second device").

    first$ mycelium device add                          # shows a one-time code
    new$   mycelium device join CODE                    # writes a request file
    first$ mycelium device add --request request.cbor   # writes a grant file
    new$   mycelium device join --grant grant.cbor      # the identity, on the new device

The files may travel over any channel (they are bound to the code, and the seed inside the
grant is sealed to a key that never leaves the new device). Pending state lives in
``devices/`` under ``--home`` (mode 0600) and is removed once used.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mycelium.cli.common import (
    HomeOption,
    JsonOption,
    emit,
    fail,
    node_paths,
    passphrase,
    user_errors,
)
from mycelium.identity import devices
from mycelium.identity.keystore import create_keystore, load_keystore, write_atomic
from mycelium.paths import NodePaths

device_app = typer.Typer(help="Use your identity on another device (no guardians needed).",
                         no_args_is_help=True)
ADD_PENDING = "add-pending.json"
JOIN_PENDING = "join-pending.json"
MAX_FILE = devices.MAX_MESSAGE_BYTES


def register(app: typer.Typer) -> None:
    app.add_typer(device_app, name="device")


def _dir(paths: NodePaths) -> Path:
    return paths.home / "devices"


@device_app.command("add")
@user_errors
def add(
    request: Annotated[Path | None, typer.Option(
        "--request", help="The new device's request file (second step).")] = None,
    out: Annotated[Path | None, typer.Option(help="Grant file (default devices/…).")] = None,
    home: str | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """On the device that has the identity: show a one-time code, then answer the request."""
    paths = node_paths(home)
    if not paths.keystore.exists():
        fail("no identity here: run `mycelium init` (or recover) first")
    pending_path = _dir(paths) / ADD_PENDING
    now_ms = int(time.time() * 1000)
    if request is None:
        code = devices.new_code()
        expires = now_ms + devices.CODE_TTL_MS
        _dir(paths).mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(pending_path, json.dumps({"code": code, "expires_ms": expires}).encode())
        emit({"code": code, "expires_ms": expires}, as_json,
             f"pairing code: {code}  (valid {devices.CODE_TTL_MS // 60000} minutes, once)\n"
             f"on the new device run: mycelium device join {code}")
        return
    pending = _read_json(pending_path, "no pairing in progress here: run `mycelium device add`")
    if now_ms > int(pending["expires_ms"]):
        pending_path.unlink()
        fail("the pairing code has expired: run `mycelium device add` again")
    identity = load_keystore(paths.keystore, passphrase())
    grant = devices.make_grant(identity, _read(request), pending["code"])
    pending_path.unlink()  # one-time: the code is spent
    target = out or _dir(paths) / "grant.cbor"
    write_atomic(target, grant)
    emit({"grant": str(target), "did": identity.did}, as_json,
         f"grant written to {target}\non the new device run: "
         f"mycelium device join --grant {target.name}")


@device_app.command("join")
@user_errors
def join(
    code: Annotated[str | None, typer.Argument(help="The code the first device shows.")] = None,
    grant: Annotated[Path | None, typer.Option(
        "--grant", help="The first device's grant file (last step).")] = None,
    out: Annotated[Path | None, typer.Option(help="Request file (default devices/…).")] = None,
    home: str | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """On the new device: ask with the code, then take the identity from the grant."""
    paths = node_paths(home)
    if paths.keystore.exists():
        fail(f"this home already has an identity ({paths.keystore}); use another --home")
    pending_path = _dir(paths) / JOIN_PENDING
    if grant is None:
        if code is None:
            fail("give the code the first device shows: mycelium device join CODE")
        normal = devices.normalize_code(code)
        request, temp_secret = devices.make_request(normal)
        paths.ensure()
        _dir(paths).mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(pending_path, json.dumps({"code": normal,
                                               "temp_secret": temp_secret.hex()}).encode())
        target = out or _dir(paths) / "request.cbor"
        write_atomic(target, request)
        emit({"request": str(target)}, as_json,
             f"device request written to {target}\non the first device run: "
             f"mycelium device add --request {target.name}")
        return
    pending = _read_json(pending_path, "no pairing in progress here: run "
                                       "`mycelium device join CODE` first")
    identity = devices.accept_grant(_read(grant), pending["code"],
                                    bytes.fromhex(pending["temp_secret"]))
    create_keystore(paths.keystore, passphrase(confirm=True), seed=identity.seed)
    pending_path.unlink()
    from mycelium.cli.identity import after_init

    data: dict[str, Any] = {"did": identity.did, "peer_id": identity.peer_id,
                            "keystore": str(paths.keystore)}
    data.update(after_init(paths, identity))
    emit(data, as_json, f"this device now holds {identity.did}")


@device_app.command("list")
@user_errors
def list_devices(home: str | None = HomeOption, as_json: bool = JsonOption) -> None:
    """This device's key, and the devices that have written for you in each space."""
    from mycelium.node.client import call_op

    paths = node_paths(home)
    data = call_op(paths, "device_list", passphrase)
    lines = [f"this device writes as {data['this_device']}"]
    for space in data["spaces"]:
        lines.append(f"{space['name']} ({space['space_id'][:12]}): "
                     f"{len(space['devices'])} device(s)")
        lines += [f"  {d}" for d in space["devices"]]
    emit(data, as_json, "\n".join(lines))


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    if len(data) > MAX_FILE:
        fail(f"{path} is larger than {MAX_FILE} bytes")
    return data


def _read_json(path: Path, missing: str) -> dict[str, Any]:
    if not path.exists():
        fail(missing)
    value = json.loads(path.read_text())
    if not isinstance(value, dict):
        fail(f"{path} is damaged; start again")
    return value
