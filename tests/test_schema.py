"""The JSON Schema: generated from the model, valid draft-07, and in agreement with the checks
and with MLflow, on hand-written documents and on the corpus.

``tests/schema/good`` and ``tests/schema/bad`` are also the positive and negative tests to
submit to SchemaStore with the schema. A bad document is named after the rule the checks
report for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pytest_mlproject import checks, schema, spec

HERE = Path(__file__).parent / "schema"
GOOD = sorted((HERE / "good").glob("*.yaml"))
BAD = sorted((HERE / "bad").glob("*.yaml"))
#: The errors about the descriptor's shape, which the schema must reject.
STRUCTURAL = {"MLP201", "MLP202", "MLP203", "MLP204", "MLP205", "MLP206", "MLP207", "MLP208"}
STRUCTURAL |= {"MLP301", "MLP303", "MLP304", "MLP305", "MLP306", "MLP307", "MLP311"}

VALIDATOR = jsonschema.Draft7Validator(json.loads(schema.SCHEMA_FILE.read_text("utf-8")))


def as_editor_sees_it(text: str) -> Any:
    """The document as JSON, the way an editor hands YAML to a JSON Schema validator."""
    return json.loads(json.dumps(yaml.safe_load(text), default=str))


def schema_errors(text: str) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(as_editor_sees_it(text))]


def structural_codes(project_dir: Path) -> set[str]:
    return {p.code for p in checks.check(project_dir) if p.code in STRUCTURAL}


def project(tmp_path: Path, text: str) -> Path:
    """A project folder with ``text`` as its MLproject, and the environment files and Spark
    job script it names."""
    (tmp_path / "MLproject").write_text(text, encoding="utf-8")
    document = yaml.safe_load(text)
    if isinstance(document, dict):
        for key in ("python_env", "conda_env"):
            if isinstance(document.get(key), str):
                (tmp_path / document[key]).write_text("dependencies: []\n", encoding="utf-8")
        job = document.get("databricks_spark_job")
        if isinstance(job, dict) and isinstance(job.get("python_file"), str):
            (tmp_path / job["python_file"]).write_text("", encoding="utf-8")
    return tmp_path


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert schema.SCHEMA_FILE.read_text("utf-8") == schema.render(), (
        "mlproject.schema.json is stale: run python -m pytest_mlproject.schema --write"
    )
    assert schema.main(["--check"]) == 0


def test_it_is_a_draft_07_schema_ready_for_schemastore() -> None:
    document = schema.generate()
    jsonschema.Draft7Validator.check_schema(document)
    assert document["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert document["$id"] == "https://json.schemastore.org/mlproject.json"
    assert document["title"]
    assert document["description"]
    undocumented = [path for path, node in _properties(document) if not node.get("description")]
    assert undocumented == []


def _properties(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """The property schemas an editor shows on hover; constraints (if/then) are not hovered."""
    if isinstance(node, dict):
        for name, child in node.get("properties", {}).items():
            if child is not False:  # `false` forbids a key; it has nothing to describe
                yield f"{path}/properties/{name}", child
        for key, child in node.items():
            if key not in ("if", "then"):
                yield from _properties(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _properties(child, f"{path}/{index}")


def test_every_key_of_the_model_is_described_and_nothing_else() -> None:
    document = schema.generate()
    definitions = document["definitions"]
    documentation = checks.DOCUMENTATION_KEYS
    assert set(document["properties"]) == spec.TOP_LEVEL_KEYS | documentation
    assert set(definitions["entryPoint"]["properties"]) == spec.ENTRY_POINT_KEYS | documentation
    parameter = definitions["parameter"]["anyOf"][1]["properties"]
    assert set(parameter) == spec.PARAMETER_KEYS | documentation
    assert set(schema.TOP_LEVEL) == spec.TOP_LEVEL_KEYS
    assert set(schema.ENTRY_POINT) == spec.ENTRY_POINT_KEYS
    assert set(schema.PARAMETER) == spec.PARAMETER_KEYS
    offered = set(parameter["type"]["anyOf"][0]["enum"])
    assert offered == checks.DOCUMENTED_TYPES | checks.COMMON_TYPES


def test_a_new_key_in_the_model_without_a_description_fails_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(schema, "TOP_LEVEL_KEYS", spec.TOP_LEVEL_KEYS | {"kubernetes_env"})
    with pytest.raises(KeyError, match="kubernetes_env"):
        schema.generate()


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_the_schema_rejects_what_the_checks_call_a_broken_shape(path: Path, tmp_path: Path) -> None:
    text = path.read_text("utf-8")
    code = path.stem.split("-")[0]
    assert code in structural_codes(project(tmp_path, text)), "the checks disagree"
    assert schema_errors(text), f"the schema accepts {path.name}, which is {code}"


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_the_schema_accepts_what_mlflow_and_the_checks_accept(path: Path, tmp_path: Path) -> None:
    from mlflow.projects import _project_spec

    text = path.read_text("utf-8")
    folder = project(tmp_path, text)
    _project_spec.load_project(str(folder))  # type: ignore[no-untyped-call]
    assert structural_codes(folder) == set()
    assert schema_errors(text) == []


def test_two_environments_are_named_in_the_error() -> None:
    text = (HERE / "bad" / "MLP301-two-environments.yaml").read_text("utf-8")
    assert any("conda_env" in message or "python_env" in message for message in schema_errors(text))


def test_it_agrees_with_mlflow_and_the_checks_on_the_corpus(corpus: Path) -> None:
    """Every descriptor MLflow loads is valid; a descriptor is invalid exactly when the
    checks find its shape broken."""
    disagreements = []
    for expected in sorted((corpus / "expected").glob("*.json")):
        verdict = json.loads(expected.read_text("utf-8"))
        folder = corpus / "projects" / expected.stem
        found = verdict["mlproject_file_found"]
        if found is None:
            continue
        try:
            text = (folder / found).read_text("utf-8")
            errors = schema_errors(text)
        except yaml.YAMLError:
            continue  # not YAML: the editor says so before any schema applies
        broken = structural_codes(folder)
        if verdict["ok"] and errors:
            disagreements.append(f"{expected.stem}: MLflow loads it, the schema says {errors}")
        if bool(errors) != bool(broken):
            disagreements.append(f"{expected.stem}: schema {errors}, checks {sorted(broken)}")
    assert disagreements == []
    assert len(list((corpus / "expected").glob("*.json"))) > 100


def test_python_m_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert schema.main([]) == 0
    assert json.loads(capsys.readouterr().out) == schema.generate()


def test_check_reports_a_stale_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "mlproject.schema.json"
    monkeypatch.setattr(schema, "SCHEMA_FILE", stale)
    stale.write_text("{}\n")
    assert schema.main(["--check"]) == 1
    assert "--write" in capsys.readouterr().out
    assert schema.main(["--write"]) == 0
    assert stale.read_text("utf-8") == schema.render()
    assert os.path.getsize(stale) > 1000
