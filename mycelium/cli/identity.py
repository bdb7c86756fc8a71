"""Identity commands: ``init``, ``id``, ``id convert``, ``id passphrase``, ``guardians setup``,
``recover …``.

Files (all under ``--home``): ``keystore.json``; guardian packages in ``guardians/``;
a pending recovery (request + temporary secret, mode 0600) and approvals in ``recovery/``.
Messages between people (packages, requests, approvals) are plain files holding the
canonical CBOR of protocols/identity.md §6, so any channel can carry them.
"""

from __future__ import annotations

import base64
import json
import sys
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
from mycelium.identity import didkey, recovery
from mycelium.identity.identity import Identity
from mycelium.identity.keystore import (
    KeystoreExists,
    change_passphrase,
    create_keystore,
    load_keystore,
    read_public,
    write_atomic,
)
from mycelium.paths import NodePaths

#: Upper bound for any package/request/approval file we read.
MAX_MESSAGE_FILE = recovery.MAX_MESSAGE_BYTES
PENDING_FILE = "pending.json"

id_app = typer.Typer(help="Show or convert identifiers (did:key <-> PeerID).")
guardians_app = typer.Typer(help="Social recovery: choose guardians.", no_args_is_help=True)
recover_app = typer.Typer(help="Recover an identity on a new device.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.add_typer(id_app, name="id")
    app.add_typer(guardians_app, name="guardians")
    app.add_typer(recover_app, name="recover")


def after_init(paths: NodePaths, identity: Identity) -> dict[str, Any]:
    """Create the store and the personal space right after the keystore (DESIGN §10:
    ``init`` creates the identity *and* the personal space); returns extra output fields."""
    from mycelium.spaces.service import ensure_personal_space
    from mycelium.store.soil import Soil

    paths.ensure()
    with Soil.open(paths.soil, identity, device_chains=True) as soil:
        space_id = ensure_personal_space(soil)
    return {"personal_space": space_id.hex()}


@user_errors
def init(
    name: str | None = typer.Option(None, "--name", help="Display name stored in the keystore."),
    home: str | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Create this node's identity (encrypted keystore) and its personal space."""
    paths = node_paths(home)
    if paths.keystore.exists():
        fail(f"already initialised: {paths.keystore} exists")
    paths.ensure()
    identity = create_keystore(paths.keystore, passphrase(confirm=True), name=name)
    data = {"did": identity.did, "peer_id": identity.peer_id, "keystore": str(paths.keystore),
            "name": name}
    data.update(after_init(paths, identity))
    emit(data, as_json, f"created {identity.did}\npeer id {identity.peer_id}")


@id_app.callback(invoke_without_command=True)
@user_errors
def show_id(ctx: typer.Context, home: str | None = HomeOption, as_json: bool = JsonOption) -> None:
    """Print this node's DID and PeerID (no passphrase needed)."""
    if ctx.invoked_subcommand is not None:
        return
    public = read_public(node_paths(home).keystore)
    emit({"did": public.did, "peer_id": public.peer_id}, as_json,
         f"did: {public.did}\npeer_id: {public.peer_id}")


@id_app.command("convert")
@user_errors
def convert(
    value: str = typer.Argument(..., help="A did:key (z6Mk…) or a PeerID (12D3KooW… or bafz…)."),
    as_json: bool = JsonOption,
) -> None:
    """did:key -> PeerID, or PeerID -> did:key."""
    text = value.strip()
    output = didkey.convert(text)
    is_did = text.startswith("did:")
    did, peer_id = (text, output) if is_did else (output, didkey.did_to_peer_id(output))
    emit({"input": value, "output": output, "did": did, "peer_id": peer_id}, as_json, output)


@id_app.command("passphrase")
@user_errors
def new_passphrase(home: str | None = HomeOption, as_json: bool = JsonOption) -> None:
    """Change the keystore passphrase (asks for the current one, then the new one twice).

    Scripts: MYCELIUM_PASSPHRASE (current) and MYCELIUM_NEW_PASSPHRASE (new). A running
    node keeps working: it holds the identity already, and the local database's key comes
    from the identity, not from the passphrase.
    """
    paths = node_paths(home)
    current = passphrase()
    new = passphrase(confirm=True, env_var="MYCELIUM_NEW_PASSPHRASE", prompt="New passphrase")
    if not new:
        fail("the new passphrase is empty")
    identity = change_passphrase(paths.keystore, current, new)
    emit({"did": identity.did, "keystore": str(paths.keystore), "changed": True}, as_json,
         f"passphrase changed for {identity.did}")


@guardians_app.command("setup")
@user_errors
def guardians_setup(
    dids: Annotated[list[str], typer.Argument(help="The guardians' did:key identifiers.")],
    threshold: Annotated[int, typer.Option("--threshold", "-k", help="Approvals to recover.")],
    out: Annotated[Path | None, typer.Option(help="Package file (default guardians/…).")] = None,
    space: Annotated[str | None, typer.Option(
        "--space", help="Also deliver the package over sync through this community space "
                        "(the guardians must be members).")] = None,
    home: str | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Split your seed among guardians; give each of them the package file (or --space)."""
    paths = node_paths(home)
    secret = passphrase()
    identity = load_keystore(paths.keystore, secret)
    package = recovery.setup_guardians(identity, threshold, list(dids))
    set_id = recovery.read_package(package).set_id.hex()
    target = out or paths.guardians / f"package-{set_id[:12]}.cbor"
    write_atomic(target, package)
    data = {"package": str(target), "owner": identity.did, "threshold": threshold,
            "guardians": list(dids), "set_id": set_id, "space": space}
    how = "send this file to each guardian"
    if space is not None:
        _ops_call(paths, secret, "guardians_publish", space=space,
                  package_b64=base64.b64encode(package).decode())
        how = f"published in space {space}: it reaches the guardians' nodes by sync"
    emit(data, as_json, f"guardian package ({threshold} of {len(dids)}) written to {target}\n{how}")


@recover_app.command("start")
@user_errors
def recover_start(
    did: str = typer.Argument(..., help="The DID to recover."),
    home: str | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """On the new device: make a recovery request for guardians to approve."""
    paths = node_paths(home)
    if paths.keystore.exists():
        fail(f"this home already has an identity ({paths.keystore}); use another --home")
    request, temp_secret = recovery.start_recovery(did)
    code = recovery.request_code(request)
    request_path = paths.recovery / f"request-{code}.cbor"
    paths.ensure()
    write_atomic(request_path, request)
    pending = {"owner": did, "temp_secret": temp_secret.hex(), "request": str(request_path),
               "code": code}
    write_atomic(paths.recovery / PENDING_FILE, json.dumps(pending).encode())
    emit({"request": str(request_path), "code": code, "owner": did}, as_json,
         f"recovery request written to {request_path}\n"
         f"send it to your guardians; they must see the code {code}")


@recover_app.command("approve")
@user_errors
def recover_approve(
    request_file: Annotated[Path, typer.Argument(help="The request file from the new device.")],
    package_file: Annotated[Path | None, typer.Option(
        "--package", help="The owner's package file.")] = None,
    space: Annotated[str | None, typer.Option(
        "--space", help="Take the owner's package from this space (delivered by sync).")] = None,
    out: Annotated[Path | None, typer.Option(help="Approval file (default recovery/…).")] = None,
    code: Annotated[str | None, typer.Option(help="Code the owner read to you.")] = None,
    home: str | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """As a guardian: approve a recovery request (re-seal your share to the new device)."""
    paths = node_paths(home)
    request = _read_message(request_file)
    parsed = recovery.read_request(request)
    _confirm_code(parsed.code, code)
    secret = passphrase()
    guardian = load_keystore(paths.keystore, secret)
    if package_file is not None:
        package = _read_message(package_file)
    elif space is not None:
        found = _ops_call(paths, secret, "guardians_fetch", space=space, owner=parsed.owner)
        if not found.get("package_b64"):
            fail(f"no guardian package of {parsed.owner} in space {space} yet "
                 "(has your node synced with theirs?)")
        package = base64.b64decode(found["package_b64"])
    else:
        fail("give the owner's package: --package FILE or --space SPACE")
    approval = recovery.approve(guardian, package, request)
    target = out or paths.recovery / f"approval-{parsed.code}-{guardian.did[-8:]}.cbor"
    write_atomic(target, approval)
    emit({"approval": str(target), "owner": parsed.owner, "code": parsed.code,
          "guardian": guardian.did}, as_json,
         f"approval for {parsed.owner} written to {target}; send it to the new device")


@recover_app.command("finish")
@user_errors
def recover_finish(
    approval_files: Annotated[list[Path], typer.Argument(help="Approval files from guardians.")],
    home: str | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """On the new device: rebuild the identity from enough approvals and save it."""
    paths = node_paths(home)
    pending_path = paths.recovery / PENDING_FILE
    if not pending_path.exists():
        fail("no recovery in progress here: run `mycelium recover start DID` first")
    pending = json.loads(pending_path.read_text())
    approvals = [_read_message(p) for p in approval_files]
    identity = recovery.finish(bytes.fromhex(pending["temp_secret"]), approvals)
    if paths.keystore.exists():
        raise KeystoreExists(f"a keystore already exists at {paths.keystore}")
    create_keystore(paths.keystore, passphrase(confirm=True), seed=identity.seed)
    pending_path.unlink()
    data = {"did": identity.did, "peer_id": identity.peer_id, "keystore": str(paths.keystore)}
    # As `init`: the store and the personal space (same id as on the lost device; this
    # device writes on its own chain, so the old one merges in when it comes back).
    data.update(after_init(paths, identity))
    emit(data, as_json, f"recovered {identity.did}\n"
         "run the node with the relay you used (or near a neighbour) to get your spaces back")


def _ops_call(paths: NodePaths, secret: str, name: str, **args: Any) -> dict[str, Any]:
    from mycelium.node.client import call_op

    return call_op(paths, name, lambda: secret, **args)


def _read_message(path: Path) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(MAX_MESSAGE_FILE + 1)
    if len(data) > MAX_MESSAGE_FILE:
        fail(f"{path} is larger than {MAX_MESSAGE_FILE} bytes")
    return data


def _confirm_code(actual: str, expected: str | None) -> None:
    """Out-of-band check that the request really comes from the owner's new device."""
    if expected is not None:
        if expected.strip().upper() != actual:
            fail(f"code mismatch: request shows {actual}, you were given {expected}")
        return
    if sys.stdin.isatty() and not typer.confirm(f"Does the owner's new device show {actual}?"):
        fail("not approved")
    if not sys.stdin.isatty():
        typer.echo(f"request code {actual} (not confirmed interactively)", err=True)
