"""Guardian packages travel over sync (issue #5): the owner publishes into a community space,
the guardians' stores receive it through a real SyncSession, and a guardian approves a
recovery request from the synced copy; the new device rebuilds the identical DID."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from mycelium.identity import recovery
from mycelium.identity.identity import Identity
from mycelium.node.ops import LocalOps
from mycelium.spaces import service
from mycelium.store.soil import Soil
from mycelium.sync.session import SyncSession
from tests.sync.pair import pump


def _session_pair(a: Soil, b: Soil) -> tuple[SyncSession, SyncSession]:
    ia, ib = a.identity, b.identity
    return (SyncSession(a, local_id=ia.public_key, remote_id=ib.public_key, initiator=True, now=0),
            SyncSession(b, local_id=ib.public_key, remote_id=ia.public_key, initiator=False, now=0))


def test_package_reaches_guardians_by_sync_and_recovers_the_did(tmp_path: Path) -> None:
    owner, g1, g2, g3 = (Identity.generate() for _ in range(4))
    soils = [Soil.open(tmp_path / f"{i}.db", ident) for i, ident in enumerate((owner, g1, g2, g3))]
    try:
        space = service.create_space(soils[0], "market")
        for soil in soils[1:]:
            service.join(soil, service.invite(soils[0], space, soil.identity.did))
        package = recovery.setup_guardians(owner, 2, [g1.did, g2.did, g3.did])
        LocalOps(soils[0]).call("guardians_publish", space="market",
                                package_b64=base64.b64encode(package).decode())
        for guardian_soil in soils[1:]:
            pump(*_session_pair(soils[0], guardian_soil))

        request, temp = recovery.start_recovery(owner.did)
        approvals = []
        for guardian_soil in soils[1:3]:
            found = LocalOps(guardian_soil).call("guardians_fetch", space="market", owner=owner.did)
            synced = base64.b64decode(found["package_b64"])
            assert synced == package
            approvals.append(recovery.approve(guardian_soil.identity, synced, request))
        assert recovery.finish(temp, approvals).did == owner.did
        with pytest.raises(recovery.NotEnoughShares):
            recovery.finish(temp, approvals[:1])
    finally:
        for soil in soils:
            soil.close()


def test_only_the_owner_can_publish_its_package(tmp_path: Path) -> None:
    owner, other = Identity.generate(), Identity.generate()
    guardians = [Identity.generate().did for _ in range(2)]
    with Soil.open(tmp_path / "x.db", other) as soil:
        service.create_space(soil, "market")
        package = recovery.setup_guardians(owner, 2, guardians)
        with pytest.raises(recovery.OwnerMismatch):
            LocalOps(soil).call("guardians_publish", space="market",
                                package_b64=base64.b64encode(package).decode())
