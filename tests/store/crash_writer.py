"""Subprocess for test_crash.py: writes to a Soil and acknowledges each commit on stdout.

Usage: crash_writer.py DB ENVELOPES SPACE_HEX. Alternates (1) ingesting the next batch of
another author's envelopes (from the CBOR list in ENVELOPES) and (2) a local put_doc; after
each commit prints ``B <seq>`` or ``A <seq>`` and flushes. It runs until killed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mycelium.codec import cbor
from mycelium.identity.identity import Identity
from mycelium.store.soil import Soil

BATCH = 100


def main() -> None:
    db, env_file, space_hex = sys.argv[1:4]
    space = bytes.fromhex(space_hex)
    me = Identity.from_seed(bytes([1]) * 32)
    other = Identity.from_seed(bytes([2]) * 32).public_key
    envelopes: list[bytes] = cbor.decode(Path(env_file).read_bytes(), max_bytes=1 << 30)
    soil = Soil.open(Path(db), me)  # synchronous=FULL: the default under test
    out = sys.stdout
    while True:
        head = soil.version_vector(space).get(other, 0)
        batch = envelopes[head:head + BATCH]
        if batch:
            soil.ingest(space, batch)
            out.write(f"B {soil.version_vector(space).get(other, 0)}\n")
            out.flush()
        env = soil.put_doc(space, "products", f"n{soil.version_vector(space)[me.public_key] + 1}",
                           {"title": "local write", "quantity": 1})
        out.write(f"A {env.seq}\n")
        out.flush()


if __name__ == "__main__":
    main()
