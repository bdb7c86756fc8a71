"""User-level operations on a node, in one place for the CLI and the control API.

The CLI calls :class:`LocalOps` directly when no node is running (opening the store itself)
and :class:`mycelium.node.client.RemoteOps` when one is: both expose ``call(name, **args)``
returning a JSON-ready dict, so every command has exactly one implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mycelium.errors import MyceliumError


class UnknownOperation(MyceliumError):
    reason = "unknown_operation"


class LocalOps:
    """Operations executed against an open :class:`~mycelium.store.soil.Soil`."""

    #: Operation names callable through :meth:`call` (and the control API).
    NAMES = frozenset({
        "space_create", "space_invite", "space_join", "space_remove", "space_list",
        "doc_put", "doc_get", "doc_list", "doc_delete", "status",
        "guardians_publish", "guardians_fetch",
    })

    def __init__(self, soil: Any, status_extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.soil = soil
        self._status_extra = status_extra

    def call(self, name: str, /, **args: Any) -> dict[str, Any]:
        if name not in self.NAMES:
            raise UnknownOperation(f"unknown operation {name!r}")
        result: dict[str, Any] = getattr(self, name)(**args)
        return result

    # -- spaces ---------------------------------------------------------------------
    def space_create(self, name: str) -> dict[str, Any]:
        from mycelium.spaces import service

        space_id = service.create_space(self.soil, name)
        return {"space_id": space_id.hex(), "name": name}

    def space_invite(self, space: str, did: str) -> dict[str, Any]:
        from mycelium.spaces import service

        code = service.invite(self.soil, self.soil.resolve_space(space), did)
        return {"invite": code}

    def space_join(self, code: str) -> dict[str, Any]:
        from mycelium.spaces import service

        space_id = service.join(self.soil, code)
        return {"space_id": space_id.hex(), "name": self.soil.space_state(space_id).name}

    def space_remove(self, space: str, did: str) -> dict[str, Any]:
        from mycelium.spaces import service

        space_id = self.soil.resolve_space(space)
        service.remove(self.soil, space_id, did)
        state = self.soil.space_state(space_id)
        return {"space_id": space_id.hex(), "removed": did, "epoch": state.current_epoch}

    def space_list(self) -> dict[str, Any]:
        return {"spaces": [self._space_summary(s) for s in self.soil.space_ids()]}

    def _space_summary(self, space_id: bytes) -> dict[str, Any]:
        from mycelium.identity.didkey import did_from_public_key

        state = self.soil.space_state(space_id)
        me = self.soil.identity.public_key
        vv = self.soil.version_vector(space_id)
        return {
            "space_id": space_id.hex(),
            "name": state.name,
            "kind": state.kind,
            "role": state.members.get(me),
            "members": sorted(did_from_public_key(m) for m in state.members),
            "epoch": state.current_epoch,
            "deltas": sum(vv.values()),
        }

    # -- documents ------------------------------------------------------------------
    def doc_put(self, space: str, coll: str, doc_id: str, data: dict[str, Any]) -> dict[str, Any]:
        env = self.soil.put_doc(self.soil.resolve_space(space), coll, doc_id, data)
        return {"delta_id": env.delta_id.hex(), "seq": env.seq}

    def doc_delete(self, space: str, coll: str, doc_id: str) -> dict[str, Any]:
        env = self.soil.delete_doc(self.soil.resolve_space(space), coll, doc_id)
        return {"delta_id": env.delta_id.hex(), "seq": env.seq}

    def doc_get(self, space: str, coll: str, doc_id: str) -> dict[str, Any]:
        return {"doc": self.soil.get_doc(self.soil.resolve_space(space), coll, doc_id)}

    def doc_list(self, space: str, coll: str) -> dict[str, Any]:
        return {"docs": self.soil.list_docs(self.soil.resolve_space(space), coll)}

    # -- social recovery ------------------------------------------------------------
    def guardians_publish(self, space: str, package_b64: str) -> dict[str, Any]:
        """Put a guardian package into a community space so it syncs to the guardians."""
        import base64
        import time

        from mycelium.identity import recovery

        parsed = recovery.read_package(base64.b64decode(package_b64, validate=True))
        owner = self.soil.identity.did
        if parsed.owner != owner:
            raise recovery.OwnerMismatch("only the owner publishes its guardian package")
        fields = {"owner": owner, "package": package_b64, "threshold": parsed.threshold,
                  "guardians": len(parsed.guardians), "created_ms": int(time.time() * 1000)}
        env = self.soil.put_doc(self.soil.resolve_space(space), "guardian_packages", owner, fields)
        return {"space": space, "owner": owner, "delta_id": env.delta_id.hex()}

    def guardians_fetch(self, space: str, owner: str) -> dict[str, Any]:
        """The guardian package of ``owner`` as received over sync (None if not yet)."""
        doc = self.soil.get_doc(self.soil.resolve_space(space), "guardian_packages", owner)
        return {"owner": owner, "package_b64": doc.get("package") if doc else None}

    # -- node -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        from mycelium.identity.didkey import did_from_public_key

        ident = self.soil.identity
        spaces = []
        for space_id in self.soil.space_ids():
            summary = self._space_summary(space_id)
            vv = self.soil.version_vector(space_id)
            summary["vector"] = {did_from_public_key(a): s for a, s in sorted(vv.items())}
            spaces.append(summary)
        base: dict[str, Any] = {
            "did": ident.did, "peer_id": ident.peer_id, "running": False,
            "spaces": spaces, "peers": [], "listen": [], "mdns": None, "last_sync": None,
        }
        if self._status_extra is not None:
            base.update(self._status_extra())
        return base
