"""Repository-level pytest configuration: our own tests drive pytest through ``pytester``."""

pytest_plugins = ["pytester"]
