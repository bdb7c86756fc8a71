"""The gateway is a node: another member's node that syncs with it over libp2p sees the
listing a WhatsApp message created (issue 18 §5)."""

from __future__ import annotations

from pathlib import Path

import trio

from mycelium.identity.identity import Identity
from mycelium.node.daemon import Node, NodeConfig
from mycelium.paths import NodePaths
from mycelium.spaces import service
from mycelium.store.soil import Soil
from tests.gateway.harness import meta_headers, running_gateway, wait_for, whatsapp_body


async def test_member_node_sees_the_whatsapp_listing(tmp_path: Path) -> None:
    (tmp_path / "gw").mkdir()
    async with running_gateway(tmp_path / "gw") as gw:
        member = Identity.generate()
        code = service.invite(gw.soil, gw.space, member.did)
        with Soil.open(tmp_path / "member.db", member) as soil_m:
            service.join(soil_m, code)
            gw_paths, m_paths = NodePaths(tmp_path / "gwnode"), NodePaths(tmp_path / "mnode")
            gw_paths.ensure()
            m_paths.ensure()
            local = ["/ip4/127.0.0.1/tcp/0"]
            gw_node = Node(gw_paths, gw.gateway.identity, gw.soil,
                           NodeConfig(listen=local, mdns=False))
            async with trio.open_nursery() as nursery:
                await nursery.start(gw_node.serve)
                peer = gw_node.listen_addrs[0]
                m_node = Node(m_paths, member, soil_m,
                              NodeConfig(listen=local, peers=[peer], mdns=False))
                await nursery.start(m_node.serve)
                raw = whatsapp_body("wamid.SYNC1", "I have 5kg of tomatoes", user_id="BR.77")
                ack = await gw.client.post("/webhooks/meta", content=raw,
                                           headers=meta_headers(raw))
                assert ack.status_code == 200
                await wait_for(lambda: len(soil_m.list_docs(gw.space, "products")) == 1,
                               timeout=30)
                [seen] = soil_m.list_docs(gw.space, "products")
                assert (seen["title"], seen["unit"], seen["shared"]) == ("tomatoes", "kg", True)
                state = soil_m.space_state(gw.space)
                custodial = gw.gateway.db.sender("wa:BR.77")
                assert custodial is not None and not state.is_member(custodial.pub)
                cert = state.delegations.get(custodial.pub)
                assert cert is not None and cert.kind == "custodial"
                nursery.cancel_scope.cancel()


async def test_listing_shared_from_a_node_is_served_at_p_id(tmp_path: Path) -> None:
    """What the web app links to (``<gateway>/p/<doc id>``): a listing a member's node
    posts with ``shared: true`` reaches the gateway by sync and is served there under its
    document id; one not shared is the same 404 as an unknown id."""
    from mycelium.node.ops import LocalOps

    (tmp_path / "gw").mkdir()
    async with running_gateway(tmp_path / "gw") as gw:
        member = Identity.generate()
        code = service.invite(gw.soil, gw.space, member.did)
        with Soil.open(tmp_path / "member.db", member) as soil_m:
            service.join(soil_m, code)
            ops = LocalOps(soil_m)
            shared = ops.listing_post(gw.space.hex(), {"title": "Shared basil", "shared": True})
            private = ops.listing_post(gw.space.hex(), {"title": "Private sage"})
            gw_paths, m_paths = NodePaths(tmp_path / "gwnode"), NodePaths(tmp_path / "mnode")
            gw_paths.ensure()
            m_paths.ensure()
            local = ["/ip4/127.0.0.1/tcp/0"]
            gw_node = Node(gw_paths, gw.gateway.identity, gw.soil,
                           NodeConfig(listen=local, mdns=False))
            async with trio.open_nursery() as nursery:
                await nursery.start(gw_node.serve)
                m_node = Node(m_paths, member, soil_m,
                              NodeConfig(listen=local, peers=[gw_node.listen_addrs[0]],
                                         mdns=False))
                await nursery.start(m_node.serve)
                await wait_for(lambda: len(gw.listings()) == 2, timeout=30)
                page = await gw.client.get(f"/p/{shared['doc_id']}")
                assert page.status_code == 200 and "Shared basil" in page.text
                hidden = await gw.client.get(f"/p/{private['doc_id']}")
                unknown = await gw.client.get("/p/0123456789abcdef")
                assert hidden.status_code == unknown.status_code == 404
                assert "Private sage" not in hidden.text
                nursery.cancel_scope.cancel()
