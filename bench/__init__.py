"""Benchmarks. ``python -m bench [--quick]`` runs every ``bench/*.py`` that defines ``run``."""
