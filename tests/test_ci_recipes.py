"""The CI recipes of docs/ci.md: valid YAML of the expected shape, quoted in full in ci.md,
and their pytest commands run here (the Databricks ones as a dry run) on fixtures/good."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "docs" / "ci"
NAMES = sorted(path.name for path in RECIPES.glob("*.yml"))


def load(name: str) -> Any:
    return yaml.safe_load((RECIPES / name).read_text("utf-8"))


def github_triggers(document: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads a bare `on:` key as the boolean true, as PyYAML does.
    return dict(document["on"] if "on" in document else document[True])


def steps(name: str) -> list[dict[str, Any]]:
    document = load(name)
    if "jobs" in document:
        return [step for job in document["jobs"].values() for step in job["steps"]]
    return list(document["steps"])


def pytest_commands(name: str) -> list[str]:
    commands = []
    for step in steps(name):
        script = step.get("run") or step.get("script") or step.get("inputs", {}).get("inlineScript")
        if script and script.lstrip().startswith("pytest "):
            commands.append(" ".join(script.split()))
    return commands


def test_every_recipe_is_there_and_quoted_in_full_in_ci_md() -> None:
    assert NAMES == [
        "azure-pipelines-nightly.yml",
        "azure-pipelines-pull-request.yml",
        "github-nightly-databricks.yml",
        "github-pull-request.yml",
    ]
    guide = (REPO / "docs" / "ci.md").read_text("utf-8")
    for name in NAMES:
        assert f"```yaml\n{(RECIPES / name).read_text('utf-8')}```" in guide, name
        assert f"(ci/{name})" in guide
    assert (RECIPES / "databricks-cluster.json").read_text("utf-8") in guide


def test_github_pull_request() -> None:
    document = load("github-pull-request.yml")
    assert "pull_request" in github_triggers(document)
    assert document["permissions"]["checks"] == "write"
    uses = [step.get("uses", "") for step in steps("github-pull-request.yml")]
    assert uses[:2] == ["actions/checkout@v4", "actions/setup-python@v5"]
    publish = steps("github-pull-request.yml")[-1]
    assert publish["uses"].startswith("EnricoMi/publish-unit-test-result-action@")
    assert publish["if"] == "${{ !cancelled() }}"  # also when the checks fail
    (command,) = pytest_commands("github-pull-request.yml")
    assert "--junitxml=reports/mlproject.xml" in command
    assert '--mlproject-summary "$GITHUB_STEP_SUMMARY"' in command
    assert "--databricks" not in command


def test_github_nightly_databricks_uses_oidc_not_a_secret() -> None:
    document = load("github-nightly-databricks.yml")
    triggers = github_triggers(document)
    assert triggers["schedule"][0]["cron"] == "0 2 * * *"
    assert "workflow_dispatch" in triggers
    assert document["permissions"]["id-token"] == "write"
    (job,) = document["jobs"].values()
    assert job["env"]["DATABRICKS_AUTH_TYPE"] == "github-oidc"
    assert set(job["env"]) == {"DATABRICKS_HOST", "DATABRICKS_AUTH_TYPE", "DATABRICKS_CLIENT_ID"}
    assert "secrets." not in (RECIPES / "github-nightly-databricks.yml").read_text("utf-8")
    (command,) = pytest_commands("github-nightly-databricks.yml")
    assert "--databricks --databricks-cluster-spec ci/databricks-cluster.json" in command
    assert "--junitxml=reports/databricks.xml" in command


def test_azure_pipelines_pull_request() -> None:
    document = load("azure-pipelines-pull-request.yml")
    assert document["pr"]["branches"]["include"] == ["main"]
    publish = steps("azure-pipelines-pull-request.yml")[-1]
    assert publish["task"] == "PublishTestResults@2"
    assert publish["condition"] == "succeededOrFailed()"
    assert publish["inputs"]["testResultsFormat"] == "JUnit"
    (command,) = pytest_commands("azure-pipelines-pull-request.yml")
    assert publish["inputs"]["testResultsFiles"] in command


def test_azure_pipelines_nightly_signs_in_through_the_service_connection() -> None:
    document = load("azure-pipelines-nightly.yml")
    assert (document["trigger"], document["pr"]) == ("none", "none")
    (schedule,) = document["schedules"]
    assert schedule["always"] is True
    run = next(s for s in steps("azure-pipelines-nightly.yml") if s.get("task") == "AzureCLI@2")
    assert run["inputs"]["azureSubscription"]
    assert run["env"]["DATABRICKS_AUTH_TYPE"] == "azure-cli"
    assert steps("azure-pipelines-nightly.yml")[-1]["task"] == "PublishTestResults@2"
    (command,) = pytest_commands("azure-pipelines-nightly.yml")
    assert "--databricks --databricks-cluster-spec ci/databricks-cluster.json" in command


@pytest.mark.parametrize("name", NAMES)
def test_the_pytest_commands_run(name: str, tmp_path: Path) -> None:
    """Each recipe's pytest command, in a repository holding fixtures/good and the cluster
    spec of the recipes; a Databricks command as a dry run, which calls nothing."""
    shutil.copytree(REPO / "fixtures" / "good", tmp_path, dirs_exist_ok=True)
    (tmp_path / "ci").mkdir()
    shutil.copy2(RECIPES / "databricks-cluster.json", tmp_path / "ci")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    summary = tmp_path / "step-summary.md"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DATABRICKS_"))},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "GITHUB_STEP_SUMMARY": str(summary),
        "DATABRICKS_CONFIG_FILE": str(tmp_path / "no-databrickscfg"),
    }
    (command,) = pytest_commands(name)
    if "--databricks" in command:
        command += " --databricks-dry-run"
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    junit = command.split("--junitxml=")[1].split()[0]
    cases = [case.get("name") for case in ET.parse(tmp_path / junit).iter("testcase")]
    assert "spec" in cases
    assert ("databricks" in cases) == ("--databricks" in command)
    if "GITHUB_STEP_SUMMARY" in command:
        assert "## MLflow projects" in summary.read_text("utf-8")
