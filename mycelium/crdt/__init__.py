"""CRDT documents: HLC timestamps, LWW field maps with tombstones, collection schemas."""
