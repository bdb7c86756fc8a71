"""Opening this node's own Soil from its home directory (CLI without a running node)."""

from __future__ import annotations

from collections.abc import Callable

from mycelium.paths import NodePaths
from mycelium.store.soil import Soil


def open_local_soil(paths: NodePaths, passphrase: str | Callable[[], str]) -> Soil:
    """Unlock the keystore, open ``soil.db`` and make sure the personal space exists.

    ``passphrase`` may be a callable so it is only asked for when needed.
    """
    from mycelium.identity.keystore import load_keystore
    from mycelium.spaces.service import ensure_personal_space

    secret = passphrase() if callable(passphrase) else passphrase
    identity = load_keystore(paths.keystore, secret)
    paths.ensure()
    soil = Soil.open(paths.soil, identity, device_chains=True)
    try:
        ensure_personal_space(soil)
    except BaseException:
        soil.close()
        raise
    return soil
