"""Submit MLflow project entry points as one-time Databricks job runs.

Nothing here imports ``databricks.sdk`` at module level: the SDK takes over a second to
import and is only loaded when a run is really submitted.
"""
