"""Check, run and submit MLflow projects from pytest.

The core (everything importable from here) knows nothing about pytest; the pytest layer lives
in :mod:`pytest_mlproject.plugin`.
"""
