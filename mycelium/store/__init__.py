"""Soil, the node's local store. READ docs/dev/store-spaces-contract.md for its interface.

``Soil`` lives in :mod:`mycelium.store.soil`; :func:`open_local_soil` opens a node home's
store for the CLI (:mod:`mycelium.store.local`).
"""

from mycelium.store.local import open_local_soil
from mycelium.store.soil import Soil
from mycelium.store.subscriptions import Change

__all__ = ["Change", "Soil", "open_local_soil"]
