"""Check, run and submit MLflow projects from pytest.

The core (everything importable from here) knows nothing about pytest; the pytest layer lives
in :mod:`pytest_mlproject.plugin`. The plugin has no test code of its own, so pytest need not
rewrite its asserts: PYTEST_DONT_REWRITE.
"""
