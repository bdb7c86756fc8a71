"""The virtual backend: deterministic discrete-event simulation of real sync cores."""

from simnet.virtual.sim import RunResult, Simulation, run

__all__ = ["RunResult", "Simulation", "run"]
