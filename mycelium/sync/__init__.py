"""Sans-IO sync: sessions, gossip bookkeeping, anti-entropy scheduling (protocols/sync.md).

Import from the submodules; the names below are the stable surface for drivers
(``mycelium.net``, the relay client, simnet).
"""

from mycelium.sync.cache import EnvelopeInfo, VerifyCache
from mycelium.sync.gossip import (
    GossipDropped,
    GossipIngested,
    GossipOutbox,
    GossipTracker,
    NeedAntiEntropy,
    topic_for_space,
)
from mycelium.sync.memstore import MemoryStore
from mycelium.sync.messages import PROTOCOL_ID, ProtocolError
from mycelium.sync.ports import DeltaStore, IngestResult, VersionVector
from mycelium.sync.scheduler import AntiEntropyScheduler
from mycelium.sync.session import (
    CaughtUp,
    Closed,
    EnvelopesIngested,
    SessionError,
    SessionState,
    SpacesShared,
    SyncLimits,
    SyncSession,
)

__all__ = [
    "PROTOCOL_ID", "AntiEntropyScheduler", "CaughtUp", "Closed", "DeltaStore", "EnvelopeInfo",
    "EnvelopesIngested", "GossipDropped", "GossipIngested", "GossipOutbox", "GossipTracker",
    "IngestResult", "MemoryStore", "NeedAntiEntropy", "ProtocolError", "SessionError",
    "SessionState", "SpacesShared", "SyncLimits", "SyncSession", "VerifyCache", "VersionVector",
    "topic_for_space",
]
