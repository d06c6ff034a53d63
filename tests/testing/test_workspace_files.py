"""Putting code where a run can read it: workspace files, volumes (Files API) and DBFS."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import pytest
from databricks.sdk.errors import (
    AlreadyExists,
    BadRequest,
    InvalidParameterValue,
    NotFound,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
)
from databricks.sdk.errors.base import DatabricksError
from databricks.sdk.service.workspace import ImportFormat, Language, ObjectType

if TYPE_CHECKING:
    from workspace_helpers import Harness

pytest_plugins = ["pytest_mlproject.plugin.workspace_fixtures", "workspace_helpers"]

NOTEBOOK = b"# Databricks notebook source\nprint(1)\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_import_needs_the_parent_folder_and_mkdirs_makes_every_level(harness: Harness) -> None:
    workspace = harness.client.workspace
    folder = f"{harness.home}/a/b"
    with pytest.raises(ResourceDoesNotExist, match=r"The parent folder \(.*/a/b\) does not exist"):
        workspace.import_(f"{folder}/x.py", content=_b64(b"1"), format=ImportFormat.RAW)

    workspace.mkdirs(folder)
    workspace.mkdirs(folder)  # already there: nothing to do

    assert workspace.get_status(f"{harness.home}/a").object_type == ObjectType.DIRECTORY
    with pytest.raises(InvalidParameterValue, match="doesn't start with '/'"):
        workspace.mkdirs("relative/path")


@pytest.mark.parametrize(
    "case",
    [
        ("raw.py", NOTEBOOK, ImportFormat.RAW, None, "raw.py", ObjectType.FILE),
        ("auto.py", NOTEBOOK, ImportFormat.AUTO, None, "auto", ObjectType.NOTEBOOK),
        ("plain.py", b"print(1)\n", ImportFormat.AUTO, None, "plain.py", ObjectType.FILE),
        ("src", b"print(1)\n", ImportFormat.SOURCE, Language.PYTHON, "src", ObjectType.NOTEBOOK),
    ],
    ids=["raw", "auto-notebook", "auto-file", "source"],
)
def test_import_formats_decide_between_file_and_notebook(
    harness: Harness, case: tuple[str, bytes, ImportFormat, Language | None, str, ObjectType]
) -> None:
    name, content, import_format, language, stored_as, object_type = case
    workspace = harness.client.workspace
    folder = f"{harness.home}/formats"
    workspace.mkdirs(folder)
    workspace.import_(
        f"{folder}/{name}", content=_b64(content), format=import_format, language=language
    )

    status = workspace.get_status(f"{folder}/{stored_as}")
    assert status.object_type == object_type
    assert status.path == f"{folder}/{stored_as}"
    on_disk = harness.workspace.root / "Workspace" / folder.lstrip("/") / stored_as
    assert on_disk.is_file() == (object_type == ObjectType.FILE)
    if object_type == ObjectType.FILE:
        assert status.size == len(content)
        assert on_disk.read_bytes() == content
    else:
        assert status.language == Language.PYTHON


def test_import_refuses_what_databricks_refuses(harness: Harness) -> None:
    workspace = harness.client.workspace
    path = f"{harness.home}/once.py"
    workspace.import_(path, content=_b64(b"1"), format=ImportFormat.RAW)
    with pytest.raises(ResourceAlreadyExists):
        workspace.import_(path, content=_b64(b"2"), format=ImportFormat.RAW)
    with pytest.raises(InvalidParameterValue, match="language"):
        workspace.import_(f"{harness.home}/nb", content=_b64(b"1"), format=ImportFormat.SOURCE)
    with pytest.raises(InvalidParameterValue, match="DBC"):
        workspace.import_(f"{harness.home}/d", content=_b64(b"1"), format=ImportFormat.DBC)

    too_big = b"#" * (10 * 1024 * 1024 + 1)
    with pytest.raises(DatabricksError, match="exceeded max size") as refused:
        workspace.import_(f"{harness.home}/big.py", content=_b64(too_big), format=ImportFormat.RAW)
    assert refused.value.error_code == "MAX_NOTEBOOK_SIZE_EXCEEDED"

    workspace.import_(path, content=_b64(b"2"), format=ImportFormat.RAW, overwrite=True)
    assert (harness.workspace.root / "Workspace" / path.lstrip("/")).read_bytes() == b"2"


def test_workspace_paths_with_and_without_the_workspace_prefix_are_one_object(
    harness: Harness,
) -> None:
    workspace = harness.client.workspace
    workspace.import_(
        f"/Workspace{harness.home}/same.py", content=_b64(b"x"), format=ImportFormat.RAW
    )
    assert workspace.get_status(f"{harness.home}/same.py").object_type == ObjectType.FILE


def test_delete_refuses_a_full_folder_unless_recursive(harness: Harness) -> None:
    workspace = harness.client.workspace
    folder = f"{harness.home}/full"
    workspace.mkdirs(folder)
    workspace.import_(f"{folder}/f.py", content=_b64(b"1"), format=ImportFormat.RAW)
    workspace.import_(f"{folder}/nb.py", content=_b64(NOTEBOOK), format=ImportFormat.AUTO)

    with pytest.raises(DatabricksError, match="is not empty") as refused:
        workspace.delete(folder)
    assert refused.value.error_code == "DIRECTORY_NOT_EMPTY"
    workspace.delete(f"{folder}/nb")
    workspace.delete(folder, recursive=True)

    with pytest.raises(ResourceDoesNotExist, match="doesn't exist"):
        workspace.get_status(folder)
    with pytest.raises(ResourceDoesNotExist):
        workspace.delete(folder)


def test_volume_files_round_trip_through_the_files_api(harness: Harness) -> None:
    files = harness.client.files

    def read(path: str) -> bytes:
        contents = files.download(path).contents
        assert contents is not None
        return contents.read()

    path = "/Volumes/main/default/vol/dir/data.bin"
    files.upload(path, io.BytesIO(b"0123456789"))

    assert read(path) == b"0123456789"
    assert files.get_metadata(path).content_length == 10
    with pytest.raises(AlreadyExists):
        files.upload(path, io.BytesIO(b"again"), overwrite=False)
    files.upload(path, io.BytesIO(b"again"), overwrite=True)
    assert read(path) == b"again"
    with pytest.raises(NotFound):
        read("/Volumes/main/default/vol/absent.bin")
    with pytest.raises(NotFound):
        files.get_metadata("/Volumes/main/default/vol/absent.bin")
    with pytest.raises(BadRequest, match="/Volumes/<catalog>/<schema>/<volume>"):
        files.upload("/tmp/outside.bin", io.BytesIO(b"x"), overwrite=True)


def test_volume_files_honour_byte_ranges(harness: Harness) -> None:
    harness.client.files.upload("/Volumes/c/s/v/r.bin", io.BytesIO(b"0123456789"))
    api = harness.client.api_client
    url = "/api/2.0/fs/files/Volumes/c/s/v/r.bin"

    middle = api.do("GET", url, headers={"Range": "bytes=2-4"}, raw=True)
    tail = api.do("GET", url, headers={"Range": "bytes=7-"}, raw=True)

    assert isinstance(middle, dict)
    assert isinstance(tail, dict)
    assert middle["contents"].read() == b"234"
    assert tail["contents"].read() == b"789"
    with pytest.raises(DatabricksError):
        api.do("GET", url, headers={"Range": "bytes=10-"}, raw=True)


def test_volume_directories(harness: Harness) -> None:
    files = harness.client.files
    files.create_directory("/Volumes/main/default/vol/new/deeper")

    files.get_directory_metadata("/Volumes/main/default/vol/new")
    with pytest.raises(NotFound):
        files.get_directory_metadata("/Volumes/main/default/vol/absent")


def test_dbfs_put_takes_up_to_1_mb(harness: Harness) -> None:
    dbfs = harness.client.dbfs
    dbfs.put("dbfs:/small.txt", contents=_b64(b"x" * 1024 * 1024))
    with pytest.raises(DatabricksError, match="exceeds the limit") as refused:
        dbfs.put("dbfs:/large.txt", contents=_b64(b"x" * (1024 * 1024 + 1)))
    assert refused.value.error_code == "MAX_BLOCK_SIZE_EXCEEDED"
    with pytest.raises(ResourceAlreadyExists):
        dbfs.put("/small.txt", contents=_b64(b"y"))
    dbfs.put("/small.txt", contents=_b64(b"y"), overwrite=True)

    assert dbfs.get_status("dbfs:/small.txt").file_size == 1


def test_dbfs_streams_larger_files_in_blocks_and_reads_them_back(harness: Harness) -> None:
    dbfs = harness.client.dbfs
    data = bytes(range(256)) * 10_000  # 2.5 MB: three blocks
    with dbfs.open("dbfs:/big/data.bin", write=True) as out:
        out.write(data)

    assert [c.path for c in harness.workspace.log.calls("POST", "/dbfs/")] == [
        "/api/2.0/dbfs/create",
        "/api/2.0/dbfs/add-block",
        "/api/2.0/dbfs/add-block",
        "/api/2.0/dbfs/add-block",
        "/api/2.0/dbfs/close",
    ]
    status = dbfs.get_status("/big/data.bin")
    assert (status.file_size, status.is_dir) == (len(data), False)
    assert dbfs.get_status("/big").is_dir is True
    part = dbfs.read("/big/data.bin", offset=256, length=4)
    assert (part.bytes_read, base64.b64decode(part.data or "")) == (4, bytes([0, 1, 2, 3]))
    with dbfs.download("dbfs:/big/data.bin") as back:
        assert back.read() == data


def test_dbfs_errors(harness: Harness) -> None:
    dbfs = harness.client.dbfs
    with pytest.raises(ResourceDoesNotExist, match="No file or directory exists"):
        dbfs.get_status("/absent")
    with pytest.raises(ResourceDoesNotExist):
        dbfs.read("/absent")
    with pytest.raises(ResourceDoesNotExist, match="No handle"):
        dbfs.add_block(987, _b64(b"x"))
    handle = dbfs.create("/blocks.bin").handle
    assert handle is not None
    with pytest.raises(DatabricksError) as refused:
        dbfs.add_block(handle, _b64(b"x" * (1024 * 1024 + 1)))
    assert refused.value.error_code == "MAX_BLOCK_SIZE_EXCEEDED"
    dbfs.close(handle)
    with pytest.raises(DatabricksError) as too_long:
        dbfs.read("/blocks.bin", length=1024 * 1024 + 1)
    assert too_long.value.error_code == "MAX_READ_SIZE_EXCEEDED"
    with pytest.raises(InvalidParameterValue, match="not valid base64"):
        dbfs.put("/bad.bin", contents="not base64!")
