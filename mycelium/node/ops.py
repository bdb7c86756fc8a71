"""User-level operations on a node, in one place for the CLI and the control API.

The CLI calls :class:`LocalOps` directly when no node is running (opening the store itself)
and :class:`mycelium.node.client.RemoteOps` when one is: both expose ``call(name, **args)``
returning a JSON-ready dict, so every command has exactly one implementation.

Inside a running node the control API and the web app ``await LocalOps.acall``: the
operations in :data:`LocalOps.PHASED` do slow network I/O, written once as generators
(:mod:`mycelium.node.phased`) whose store phases run on the trio thread and whose I/O
runs in a worker thread, so the node keeps syncing and answering meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mycelium.errors import MyceliumError
from mycelium.node.phased import Offload, Phased, run_inline, run_offloaded

#: Seconds each HTTP request of ``gateway_link`` may take.
GATEWAY_TIMEOUT_S = 10.0
#: A gateway's public address as people type it (``fullmatch``; no query or fragment):
#: checked by ``gateway_link`` and by the web app before it saves one.
GATEWAY_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")


class UnknownOperation(MyceliumError):
    reason = "unknown_operation"


class LocalOps:
    """Operations executed against an open :class:`~mycelium.store.soil.Soil`."""

    #: Operation names callable through :meth:`call` (and the control API).
    NAMES = frozenset({
        "space_create", "space_invite", "space_join", "space_remove", "space_list",
        "space_revoke",
        "doc_put", "doc_get", "doc_list", "doc_delete", "status",
        "guardians_publish", "guardians_fetch",
        "archive_push", "archive_pull",
        "space_show", "doc_create", "market_list", "listing_post", "listing_update",
        "guardians_setup", "guardians_list", "recovery_check", "recovery_approve",
        "web_login_link", "device_list", "gateway_link",
    })

    #: Operations with slow network I/O, each implemented by a ``<name>_phases`` generator
    #: (store phases here, :class:`Offload` steps elsewhere); ``<name>`` runs it inline.
    PHASED = frozenset({"archive_push", "archive_pull", "gateway_link"})

    #: The running node's web app (:mod:`mycelium.web.server`) sets this; it mints the
    #: one-time login links of ``web_login_link`` (``mycelium open``).
    web: Any = None

    def __init__(self, soil: Any, status_extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.soil = soil
        self._status_extra = status_extra

    def call(self, name: str, /, **args: Any) -> dict[str, Any]:
        if name not in self.NAMES:
            raise UnknownOperation(f"unknown operation {name!r}")
        result: dict[str, Any] = getattr(self, name)(**args)
        return result

    async def acall(self, name: str, /, **args: Any) -> dict[str, Any]:
        """:meth:`call` for trio code (control API, web app): a phased operation's slow
        steps run in a worker thread, its store reads and writes here; the rest inline."""
        if name not in self.PHASED:
            return self.call(name, **args)
        result: dict[str, Any] = await run_offloaded(getattr(self, f"{name}_phases")(**args))
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

    def space_revoke(self, space: str, did: str) -> dict[str, Any]:
        """Revoke a delegated key (a gateway sender, a lost device), pinned at what this
        node holds of it (protocols/delegation.md §4a)."""
        from mycelium.identity.didkey import public_key_from_did
        from mycelium.spaces import service

        space_id = self.soil.resolve_space(space)
        pub = public_key_from_did(did)
        service.revoke(self.soil, space_id, [pub])
        keep = self.soil.space_state(space_id).kept_seq(pub)
        return {"space_id": space_id.hex(), "revoked": did, "keep": keep}

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
        from mycelium.identity.didkey import did_from_public_key

        env = self.soil.put_doc(self.soil.resolve_space(space), coll, doc_id, data)
        # author: the key whose chain holds it (a device key since device chains), which
        # is what version vectors are keyed by
        return {"delta_id": env.delta_id.hex(), "seq": env.seq,
                "author": did_from_public_key(env.author)}

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

    def space_show(self, space: str) -> dict[str, Any]:
        """One space with its members and their roles (``me`` marks this node's identity)."""
        from mycelium.identity.didkey import did_from_public_key

        space_id = self.soil.resolve_space(space)
        summary = self._space_summary(space_id)
        me = self.soil.identity.public_key
        state = self.soil.space_state(space_id)
        summary["members"] = sorted(
            ({"did": did_from_public_key(pub), "role": role, "me": pub == me}
             for pub, role in state.members.items()), key=lambda m: (not m["me"], m["did"]))
        return summary

    def doc_create(self, space: str, coll: str, data: dict[str, Any]) -> dict[str, Any]:
        """A new document under a fresh random id (for notes and listings made in apps)."""
        import secrets

        doc_id = secrets.token_hex(8)
        return {"doc_id": doc_id, **self.doc_put(space, coll, doc_id, data)}

    # -- market ---------------------------------------------------------------------
    def market_list(self, q: str = "", space: str = "", status: str = "", location: str = "",
                    unit: str = "") -> dict[str, Any]:
        """Listings of every community space this node belongs to, newest first.

        ``space``/``status``/``location``/``unit`` filter by equality (indexed in SQL);
        ``q`` is a case-insensitive text search over title, description and location.
        """
        equals = {k: v for k, v in (("status", status), ("location", location),
                                    ("unit", unit)) if v}
        ids = [self.soil.resolve_space(space)] if space else self.soil.member_spaces()
        needle = q.strip().casefold()
        listings = []
        for space_id in ids:
            if self.soil.space_kind(space_id) != "community":
                continue
            name = self.soil.space_state(space_id).name
            for doc in self.soil.list_docs(space_id, "products", **equals):
                text = " ".join(str(doc.get(f, "")) for f in ("title", "description", "location"))
                if needle and needle not in text.casefold():
                    continue
                listings.append({**doc, "space_id": space_id.hex(), "space_name": name})
        listings.sort(key=lambda d: (-int(d.get("created_ms") or 0), d["_id"]))
        return {"listings": listings}

    def listing_post(self, space: str, data: dict[str, Any]) -> dict[str, Any]:
        """A new listing by this node's identity: status ``available``, stamped now."""
        import time

        fields = {"status": "available", **data, "author": self.soil.identity.did,
                  "created_ms": int(time.time() * 1000)}
        return self.doc_create(space, "products", fields)

    def listing_update(self, space: str, doc_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Change some fields of an existing listing (edit, reserve, sell, withdraw, share)."""
        from mycelium.store.soil import StoreError

        doc = self.doc_get(space, "products", doc_id)["doc"]
        if doc is None:
            raise StoreError(f"no listing {doc_id!r} in space {space!r}", reason="unknown_doc")
        if doc.get("author") not in (None, self.soil.identity.did):
            raise StoreError("only its author changes a listing", reason="not_author")
        return {"doc_id": doc_id, **self.doc_put(space, "products", doc_id, data)}

    # -- gateway --------------------------------------------------------------------
    def gateway_link(self, code: str, gateway: str) -> dict[str, Any]:
        """Link a gateway identity (see :meth:`gateway_link_phases`), all phases inline."""
        return run_inline(self.gateway_link_phases(code, gateway))

    def gateway_link_phases(self, code: str, gateway: str) -> Phased[dict[str, Any]]:
        """Take ownership of what one sent through a gateway (WhatsApp/Instagram): sign the
        challenge behind ``code`` with this identity, then write the linked listings again
        under our own DID (same ids: LWW makes ours win) when we are a member of the
        gateway's market space (``member`` false otherwise: an admin must invite us).
        The HTTP exchange (two round trips of at most :data:`GATEWAY_TIMEOUT_S` each) is
        one :class:`Offload` step: it needs the identity, not the store."""
        import json

        code = code.strip().upper()
        if not re.fullmatch(r"[A-Z2-7]{8}", code):
            raise MyceliumError("a link code is 8 letters and digits, as the gateway sent it",
                                reason="bad_link_code")
        base = gateway.strip().rstrip("/")
        if not GATEWAY_URL.fullmatch(base):
            raise MyceliumError("the gateway address must start with http:// or https://",
                                reason="bad_gateway_url")
        identity = self.soil.identity
        body: dict[str, Any] = yield Offload(
            "gateway_link", lambda: _gateway_exchange(base, code, identity))
        try:
            space_id, listings = bytes.fromhex(str(body["space_id"])), list(body["listings"])
        except (KeyError, ValueError, TypeError) as exc:
            raise MyceliumError(f"the gateway's answer is malformed: {exc}",
                                reason="gateway_bad_answer") from exc
        member = space_id in self.soil.space_ids() and \
            self.soil.space_state(space_id).members.get(self.soil.identity.public_key) is not None
        reissued = 0
        for doc in listings if member else []:
            fields = {k: v for k, v in doc.items() if not k.startswith("_")}
            fields["author"] = self.soil.identity.did
            self.doc_put(space_id.hex(), "products", str(doc["_id"]),
                         json.loads(json.dumps(fields)))
            reissued += 1
        return {"did": body["did"], "space_id": body["space_id"],
                "listings": len(listings), "reissued": reissued, "member": member,
                "gateway": base}

    # -- guardians as seen from an app -------------------------------------------------
    def guardians_setup(self, space: str, threshold: int, dids: list[str]) -> dict[str, Any]:
        """Split this identity's seed among ``dids`` (K of N) and publish the package in
        ``space``, from where it syncs to the guardians' nodes (docs/recovery.md)."""
        import base64

        from mycelium.identity import recovery
        from mycelium.spaces.errors import NotMember

        space_id = self.soil.resolve_space(space)
        members = self.space_show(space)["members"]
        known = {m["did"] for m in members}
        strangers = [d for d in dids if d not in known]
        if strangers:
            raise NotMember(f"not members of {space!r}: {', '.join(strangers)}")
        package = recovery.setup_guardians(self.soil.identity, threshold, list(dids))
        published = self.guardians_publish(space_id.hex(),
                                           base64.b64encode(package).decode())
        set_id = recovery.read_package(package).set_id.hex()
        return {**published, "threshold": threshold, "guardians": list(dids), "set_id": set_id}

    def guardians_list(self) -> dict[str, Any]:
        """Who guards whom: every guardian package visible in this node's spaces."""
        import base64

        from mycelium.errors import MyceliumError
        from mycelium.identity import recovery

        me = self.soil.identity.did
        out = []
        for space_id in self.soil.member_spaces():
            if self.soil.space_kind(space_id) != "community":
                continue
            name = self.soil.space_state(space_id).name
            for doc in self.soil.list_docs(space_id, "guardian_packages"):
                try:
                    pkg = recovery.read_package(base64.b64decode(doc.get("package", "")))
                except (MyceliumError, ValueError):
                    continue
                out.append({"owner": pkg.owner, "guardians": pkg.guardians,
                            "threshold": pkg.threshold, "space_id": space_id.hex(),
                            "space_name": name, "mine": pkg.owner == me,
                            "i_guard": me in pkg.guardians})
        return {"me": me, "packages": out}

    def recovery_check(self, request_b64: str) -> dict[str, Any]:
        """Whose recovery a request is and the short code to compare with the new device."""
        import base64
        import binascii

        from mycelium.identity import recovery

        try:
            raw = base64.b64decode(request_b64.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise recovery.BadRecoveryMessage("recovery request is not base64") from exc
        req = recovery.read_request(raw)
        return {"owner": req.owner, "code": req.code}

    def recovery_approve(self, space: str, request_b64: str, code: str) -> dict[str, Any]:
        """As a guardian: approve a request whose short code the person checked (``code``
        must equal the request's code), using the package synced in ``space``."""
        import base64

        from mycelium.identity import recovery

        checked = self.recovery_check(request_b64)
        if code.strip().upper() != checked["code"]:
            raise recovery.BadRecoveryMessage(
                "the short code does not match this request", reason="code_mismatch")
        package = self.guardians_fetch(space, checked["owner"])["package_b64"]
        if package is None:
            raise recovery.NotAGuardian(f"no guardian package of {checked['owner']} in {space}")
        approval = recovery.approve(self.soil.identity, base64.b64decode(package),
                                    base64.b64decode(request_b64.strip()))
        return {**checked, "approval_b64": base64.b64encode(approval).decode()}

    # -- IPFS archives (mycelium/archive, protocols/archive.md) ------------------------
    def archive_push(self, space: str, ipfs_api: str | None = None) -> dict[str, Any]:
        """Archive a space to IPFS (see :meth:`archive_push_phases`), all phases inline."""
        return run_inline(self.archive_push_phases(space, ipfs_api))

    def archive_push_phases(self, space: str,
                            ipfs_api: str | None = None) -> Phased[dict[str, Any]]:
        """Archive a space to IPFS (imported and pinned); ``{"cid", ...}``. The store is
        read first (envelopes, genesis, readers); building, encrypting and importing the
        archive is one :class:`Offload` step (a personal space for this identity alone,
        key derived from the seed; a community space for its current members)."""
        from mycelium.archive import service

        space_id = self.soil.resolve_space(space)
        snapshot = service.snapshot_space(self.soil, space_id)
        identity = self.soil.identity

        def build_and_import() -> dict[str, Any]:
            from mycelium.archive.ipfs import IpfsClient

            with IpfsClient(ipfs_api) as ipfs:
                pushed = service.push_snapshot(snapshot, signer=identity, ipfs=ipfs)
                return {**pushed.as_dict(), "ipfs_api": ipfs.url}

        pushed: dict[str, Any] = yield Offload("archive_push", build_and_import)
        return {**pushed, "space_id": space_id.hex()}

    def archive_pull(self, cid: str, ipfs_api: str | None = None,
                     trust_relays: list[str] | None = None,
                     from_relay: str | None = None) -> dict[str, Any]:
        """Restore a space from an archive CID (see :meth:`archive_pull_phases`), inline."""
        return run_inline(self.archive_pull_phases(cid, ipfs_api, trust_relays, from_relay))

    def archive_pull_phases(self, cid: str, ipfs_api: str | None = None,
                            trust_relays: list[str] | None = None,
                            from_relay: str | None = None) -> Phased[dict[str, Any]]:
        """Restore a space from an archive CID (every block verified before any ingest).
        ``trust_relays``: DIDs of relays whose archives are accepted (relay/archiver.py).
        ``from_relay`` (``URL#did:key:…``): ``cid`` is then a space (id, or name if known
        here), and the archive is the latest that relay made of it (asked as a member,
        relay/rest.py), trusted by the DID pinned in the URL. Export, block checks,
        decryption and verification are one :class:`Offload` step; only the verified
        contents reach the store (``service.restore``)."""
        from mycelium.archive import service
        from mycelium.identity.didkey import public_key_from_did

        trusted = {public_key_from_did(did) for did in trust_relays or ()}
        identity = self.soil.identity
        relay = space = None
        if from_relay is not None:
            from mycelium.relay.client import RelayUrl

            relay = RelayUrl.parse(from_relay)
            space = self._space_for_relay(cid)
        found: dict[str, Any] = {}

        def fetch_and_verify() -> tuple[Any, ...]:
            from mycelium.archive.ipfs import IpfsClient

            root_cid = cid
            if relay is not None and space is not None:
                from mycelium.relay.rest import latest_archive

                found.update(latest_archive(relay, identity, space))
                root_cid = found["cid"]
                trusted.add(public_key_from_did(found["relay_did"]))
                service.log.info("relay %s: latest archive of space %s is %s (%d deltas)",
                                 relay.url, space.hex()[:12], root_cid, found["envelopes"])
            with IpfsClient(ipfs_api) as ipfs:
                root, blocks = service.fetch(ipfs, root_cid)
            return (root, *service.open_verified(root, blocks, identity,
                                                 trusted_signers=trusted))

        with service.refusal_logged(cid):
            root, contents, preview = yield Offload("archive_pull", fetch_and_verify)
            summary = service.restore(self.soil, root, contents, preview)
        if relay is not None:
            summary["from_relay"] = {"url": relay.url, **found}
        return summary

    def _space_for_relay(self, space: str) -> bytes:
        """A space id for ``archive pull --from-relay``: a space known here by id or name,
        or any hex id (a recovered device does not know the space yet)."""
        from mycelium.store.soil import UnknownSpace

        try:
            return self.soil.resolve_space(space)
        except UnknownSpace:
            try:
                raw = bytes.fromhex(space)
            except ValueError:
                raw = b""
            if not 8 <= len(raw) <= 64:
                raise MyceliumError(f"{space!r} is neither a space known here nor a space "
                                    "id (hex)", reason="unknown_space") from None
            return raw

    # -- node -----------------------------------------------------------------------
    def web_login_link(self) -> dict[str, Any]:
        """A one-time login link for the web app (``mycelium open``)."""
        if self.web is None:
            raise MyceliumError("the web app runs only inside `mycelium run` (with --web)",
                                reason="web_not_running")
        url: str = self.web.login_link()
        return {"url": url}

    def device_list(self) -> dict[str, Any]:
        """This store's device key, and per space the device keys this identity certified
        (protocols/delta.md §10): every device that has written there for you."""
        from mycelium.identity.didkey import did_from_public_key

        me = self.soil.identity.public_key
        device = self.soil.device if self.soil.device_chains else self.soil.identity
        spaces = []
        for space_id in self.soil.space_ids():
            state = self.soil.space_state(space_id)
            certs = [state.delegations.get(d) for d in state.delegations.subjects_of(me)]
            devices = sorted(did_from_public_key(c.subject) for c in certs
                             if c is not None and c.kind == "device")
            spaces.append({"space_id": space_id.hex(), "name": state.name, "devices": devices})
        return {"did": self.soil.identity.did, "this_device": did_from_public_key(
            device.public_key), "spaces": spaces}

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


def _gateway_exchange(base: str, code: str, identity: Any) -> dict[str, Any]:
    """The network half of ``gateway_link`` (runs in a worker thread inside a node): fetch
    the challenge behind ``code``, answer it signed by ``identity``; the gateway's answer."""
    import base64

    import httpx

    from mycelium.identity.auth import Challenge, answer

    url = f"{base}/link/{code}"
    try:
        got = httpx.get(url, timeout=GATEWAY_TIMEOUT_S)
        if got.status_code != 200:
            raise MyceliumError(f"the gateway refused the code: "
                                f"{got.json().get('error', got.status_code)}",
                                reason="link_code_refused")
        challenge = Challenge.from_cbor(base64.b64decode(got.json()["challenge"]))
        signed = answer(identity, challenge).to_cbor()
        done = httpx.post(url, content=base64.b64encode(signed), timeout=GATEWAY_TIMEOUT_S)
        body: dict[str, Any] = done.json()
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise MyceliumError(f"cannot talk to the gateway at {base}: {exc}",
                            reason="gateway_unreachable") from exc
    if done.status_code != 200:
        raise MyceliumError(f"the gateway refused the answer: {body.get('reason')}: "
                            f"{body.get('error')}", reason="link_refused")
    return body
