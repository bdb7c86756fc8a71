"""Tests of mycelium.spaces: genesis, control log, epochs, invites, service, CLI."""
