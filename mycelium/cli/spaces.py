"""``mycelium space …``: create, invite, join, remove, list (DESIGN.md §10).

Each command is one call of :mod:`mycelium.node.ops` (through the running node's control
API if there is one, else on the store opened directly), so the CLI holds no space logic.
"""

from __future__ import annotations

from typing import Any

import typer

from mycelium.cli.common import HomeOption, JsonOption, emit, node_paths, passphrase, user_errors

space_app = typer.Typer(help="Spaces: create, invite, join, remove members, revoke keys, list.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(space_app, name="space")


def _call(home: str | None, op: str, **args: Any) -> dict[str, Any]:
    from mycelium.node.client import call_op

    return call_op(node_paths(home), op, passphrase, **args)


@space_app.command("create")
@user_errors
def create(
    name: str = typer.Argument(..., help="Name of the new community space."),
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """Create a community space; you are its admin."""
    data = _call(home, "space_create", name=name)
    emit({"space_id": data["space_id"]}, as_json, f"created space {name} {data['space_id']}")


@space_app.command("invite")
@user_errors
def invite(
    space: str = typer.Argument(..., help="Space id or unique name."),
    did: str = typer.Argument(..., help="did:key of the new member."),
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """Add a member, seal the current key to them and print an invite code to send them."""
    data = _call(home, "space_invite", space=space, did=did)
    emit({"invite": data["invite"]}, as_json, data["invite"])


@space_app.command("join")
@user_errors
def join(
    code: str = typer.Argument(..., help="Invite code from an admin of the space."),
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """Join a space from an invite code (then sync to fetch its content)."""
    data = _call(home, "space_join", code=code)
    emit(data, as_json, f"joined space {data.get('name', '')} {data['space_id']}")


@space_app.command("remove")
@user_errors
def remove(
    space: str = typer.Argument(..., help="Space id or unique name."),
    did: str = typer.Argument(..., help="did:key of the member to remove."),
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """Remove a member and start a new key epoch without them."""
    data = _call(home, "space_remove", space=space, did=did)
    emit(data, as_json, f"removed {did}; new epoch {data.get('epoch')}")


@space_app.command("revoke")
@user_errors
def revoke(
    space: str = typer.Argument(..., help="Space id or unique name."),
    did: str = typer.Argument(..., help="did:key of the delegated key (gateway sender, device)."),
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """Revoke a delegated key: what it wrote so far stays, nothing after."""
    data = _call(home, "space_revoke", space=space, did=did)
    emit(data, as_json, f"revoked {did}; its writes up to seq {data.get('keep')} stay")


@space_app.command("list")
@user_errors
def list_spaces(home: str | None = HomeOption, as_json: bool = JsonOption) -> None:
    """Spaces this node holds: name, id, kind, your role, members, current epoch."""
    data = _call(home, "space_list")
    emit(data, as_json, _render(data["spaces"]))


def _render(spaces: list[dict[str, Any]]) -> str:
    if not spaces:
        return "no spaces"
    lines = [f"{'name':<20} {'kind':<10} {'role':<7} {'members':>7}  {'epoch':<20} id"]
    for s in spaces:
        lines.append(f"{s['name']:<20} {s['kind']:<10} {s.get('role') or '-':<7} "
                     f"{len(s['members']):>7}  {s['epoch']:<20} {s['space_id']}")
    return "\n".join(lines)
