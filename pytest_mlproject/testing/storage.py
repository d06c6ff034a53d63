"""Where uploaded code lives: workspace files, Unity Catalog volumes and DBFS, on a real disk.

One temporary directory per server mirrors what a cluster sees: ``<root>/Workspace/...``,
``<root>/Volumes/...`` and ``<root>/dbfs/...``. Files and folders live only on disk, so a task
script that writes beside itself is seen by the APIs as a cluster's would be; notebooks are not
plain files on a cluster, so they live in memory and never appear on disk.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mlproject.testing.errors import ApiError, exists, invalid, missing

MAX_IMPORT_BYTES = 10 * 1024 * 1024
MAX_DBFS_BLOCK = 1024 * 1024
DEFAULT_DBFS_READ = 512 * 1024
IMPORT_FORMATS = ("SOURCE", "HTML", "JUPYTER", "DBC", "R_MARKDOWN", "AUTO", "RAW")
LANGUAGES = ("PYTHON", "SQL", "SCALA", "R")

# What AUTO recognises as a notebook: the first line Databricks writes when it exports one.
_NOTEBOOK_HEADERS = {
    ".py": (b"# Databricks notebook source", "PYTHON"),
    ".sql": (b"-- Databricks notebook source", "SQL"),
    ".scala": (b"// Databricks notebook source", "SCALA"),
    ".r": (b"# Databricks notebook source", "R"),
}


@dataclass
class Notebook:
    """What get-status tells of a notebook; its source is not kept, as nothing reads it back."""

    language: str
    created_at: int
    modified_at: int


def now_ms() -> int:
    return int(time.time() * 1000)


def _parts(path: Any, what: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise invalid(f"Missing required field: {what}")
    if not path.startswith("/"):
        raise invalid(f"Path ({path}) doesn't start with '/'")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise invalid(f"Path ({path}) is not a valid path.")
    return parts


def workspace_path(path: Any) -> str:
    """The canonical workspace path: ``/Workspace/Users/x`` and ``/Users/x`` are one object."""
    parts = _parts(path, "path")
    if parts[:1] == ["Workspace"]:
        parts = parts[1:]
    return "/" + "/".join(parts)


def dbfs_path(path: Any) -> str:
    """The canonical DBFS path; ``dbfs:/a`` and ``/a`` name the same file."""
    if isinstance(path, str) and path.startswith("dbfs:"):
        path = path[len("dbfs:") :]
    return "/" + "/".join(_parts(path, "path"))


def _write_atomically(target: Path, data: bytes) -> None:
    """Replace ``target`` whole, so a running task never reads a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def decode_base64(text: Any, what: str) -> bytes:
    if text is None:
        return b""
    if not isinstance(text, str):
        raise invalid(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{what} is not valid base64") from None


class Storage:
    """The file systems of one fake workspace, thread-safe."""

    def __init__(self, root: Path, home: str) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._notebooks: dict[str, Notebook] = {}
        self._object_ids: dict[str, int] = {}
        self._handles: dict[int, tuple[str, bytearray, bool]] = {}
        self._next_handle = 1
        for top in ("Workspace", "Volumes", "dbfs"):
            (root / top).mkdir(parents=True, exist_ok=True)
        for folder in ("/Users", "/Shared", home):
            self._workspace_disk(folder).mkdir(parents=True, exist_ok=True)

    # -- workspace -------------------------------------------------------------------------

    def _workspace_disk(self, path: str) -> Path:
        return self.root / "Workspace" / path.lstrip("/")

    def _object_id(self, path: str) -> int:
        return self._object_ids.setdefault(path, 1_000_000_000 + len(self._object_ids))

    def workspace_import(
        self, path: Any, content: bytes, fmt: Any, language: Any, overwrite: bool
    ) -> None:
        target = workspace_path(path)
        if len(content) > MAX_IMPORT_BYTES:
            raise ApiError(
                400,
                "MAX_NOTEBOOK_SIZE_EXCEEDED",
                f"File size imported is ({len(content)} bytes), "
                f"exceeded max size ({MAX_IMPORT_BYTES} bytes)",
            )
        fmt = fmt or "SOURCE"
        if fmt not in IMPORT_FORMATS:
            raise invalid(f"Invalid format: {fmt}. Valid formats: {', '.join(IMPORT_FORMATS)}")
        if language is not None and language not in LANGUAGES:
            raise invalid(f"Invalid language: {language}. Valid languages: {', '.join(LANGUAGES)}")
        if fmt == "DBC":
            raise invalid("The fake workspace does not import DBC archives; use AUTO or RAW")
        notebook_language: str | None = None
        if fmt == "AUTO":
            suffix = Path(target).suffix.lower()
            header = _NOTEBOOK_HEADERS.get(suffix)
            if header and content.lstrip().startswith(header[0]):
                notebook_language = header[1]
            elif suffix == ".ipynb":
                notebook_language = "PYTHON"
            if notebook_language:
                # Databricks drops the extension of what AUTO makes a notebook.
                target = target[: -len(suffix)]
        elif fmt == "SOURCE":
            if language is None:
                raise invalid("The language field is required to import a file as SOURCE")
            notebook_language = language
        elif fmt != "RAW":
            notebook_language = language or ("R" if fmt == "R_MARKDOWN" else "PYTHON")
        with self._lock:
            self._check_can_write(target, overwrite)
            disk = self._workspace_disk(target)
            if notebook_language:
                disk.unlink(missing_ok=True)
                created = self._notebooks[target].created_at if target in self._notebooks else 0
                stamp = now_ms()
                self._notebooks[target] = Notebook(notebook_language, created or stamp, stamp)
            else:
                self._notebooks.pop(target, None)
                _write_atomically(disk, content)

    def _check_can_write(self, target: str, overwrite: bool) -> None:
        if target == "/":
            raise exists("Path (/) already exists.")
        parent = target.rsplit("/", 1)[0] or "/"
        if not self._workspace_disk(parent).is_dir():
            raise missing(f"The parent folder ({parent}) does not exist.")
        disk = self._workspace_disk(target)
        if disk.is_dir():
            raise exists(f"Path ({target}) already exists.")
        if (disk.exists() or target in self._notebooks) and not overwrite:
            raise exists(f"Path ({target}) already exists.")

    def workspace_mkdirs(self, path: Any) -> None:
        target = workspace_path(path)
        with self._lock:
            current = ""
            for part in target.strip("/").split("/"):
                current = f"{current}/{part}"
                disk = self._workspace_disk(current)
                if disk.is_file() or current in self._notebooks:
                    raise ApiError(
                        400,
                        "RESOURCE_ALREADY_EXISTS",
                        f"Cannot create directory {target}: {current} is an existing file.",
                    )
            self._workspace_disk(target).mkdir(parents=True, exist_ok=True)

    def workspace_status(self, path: Any) -> dict[str, Any]:
        target = workspace_path(path)
        with self._lock:
            info: dict[str, Any] = {"path": target, "object_id": self._object_id(target)}
            notebook = self._notebooks.get(target)
            disk = self._workspace_disk(target)
            if notebook is not None:
                info.update(
                    object_type="NOTEBOOK",
                    language=notebook.language,
                    created_at=notebook.created_at,
                    modified_at=notebook.modified_at,
                )
            elif disk.is_dir():
                info["object_type"] = "DIRECTORY"
            elif disk.is_file():
                stat = disk.stat()
                stamp = int(stat.st_mtime * 1000)
                info.update(
                    object_type="FILE", size=stat.st_size, created_at=stamp, modified_at=stamp
                )
            else:
                raise missing(f"Path ({target}) doesn't exist.")
            info["resource_id"] = str(info["object_id"])
            return info

    def workspace_delete(self, path: Any, recursive: bool) -> None:
        target = workspace_path(path)
        if target == "/":
            raise invalid("Cannot delete the root folder.")
        with self._lock:
            disk = self._workspace_disk(target)
            if self._notebooks.pop(target, None) is not None:
                return
            if disk.is_file():
                disk.unlink()
                return
            if not disk.is_dir():
                raise missing(f"Path ({target}) doesn't exist.")
            inside = [p for p in self._notebooks if p.startswith(target + "/")]
            if not recursive and (inside or any(disk.iterdir())):
                raise ApiError(400, "DIRECTORY_NOT_EMPTY", f"Folder ({target}) is not empty.")
            for notebook in inside:
                del self._notebooks[notebook]
            shutil.rmtree(disk)

    # -- Unity Catalog volumes (Files API) ----------------------------------------------------

    def volume_disk(self, path: str, *, is_file: bool = True) -> Path:
        parts = _parts(path, "file_path")
        # /Volumes/<catalog>/<schema>/<volume>, then the file's own path inside the volume.
        if parts[:1] != ["Volumes"] or len(parts) < (5 if is_file else 4):
            raise invalid(
                f"Invalid path {path}: the Files API takes /Volumes/<catalog>/<schema>/<volume>/..."
            )
        return self.root.joinpath(*parts)

    def volume_put(self, path: str, data: bytes, overwrite: bool) -> None:
        disk = self.volume_disk(path)
        with self._lock:
            if disk.is_dir():
                raise ApiError(409, "ALREADY_EXISTS", f"{path} is a directory.")
            if disk.exists() and not overwrite:
                raise ApiError(409, "ALREADY_EXISTS", "The file being created already exists.")
            _write_atomically(disk, data)

    def volume_file(self, path: str) -> Path:
        disk = self.volume_disk(path)
        if not disk.is_file():
            raise ApiError(404, "NOT_FOUND", "The file being accessed is not found.")
        return disk

    def volume_mkdirs(self, path: str) -> None:
        disk = self.volume_disk(path, is_file=False)
        with self._lock:
            if disk.is_file():
                raise ApiError(409, "ALREADY_EXISTS", f"{path} is an existing file.")
            disk.mkdir(parents=True, exist_ok=True)

    def volume_directory(self, path: str) -> None:
        if not self.volume_disk(path, is_file=False).is_dir():
            raise ApiError(404, "NOT_FOUND", "The directory being accessed is not found.")

    # -- DBFS -------------------------------------------------------------------------------

    def _dbfs_disk(self, path: str) -> Path:
        return self.root / "dbfs" / path.lstrip("/")

    def _check_block(self, data: bytes) -> None:
        if len(data) > MAX_DBFS_BLOCK:
            raise ApiError(
                400,
                "MAX_BLOCK_SIZE_EXCEEDED",
                f"The block of {len(data)} bytes exceeds the limit of {MAX_DBFS_BLOCK} bytes; "
                "use create, add-block and close for larger files.",
            )

    def _check_dbfs_writable(self, path: str, overwrite: bool) -> None:
        disk = self._dbfs_disk(path)
        if disk.is_dir() or (disk.exists() and not overwrite):
            raise exists(f"A file or directory already exists at the input path dbfs:{path}.")

    def dbfs_put(self, path: Any, data: bytes, overwrite: bool) -> None:
        target = dbfs_path(path)
        self._check_block(data)
        with self._lock:
            self._check_dbfs_writable(target, overwrite)
            _write_atomically(self._dbfs_disk(target), data)

    def dbfs_create(self, path: Any, overwrite: bool) -> int:
        target = dbfs_path(path)
        with self._lock:
            self._check_dbfs_writable(target, overwrite)
            handle = self._next_handle
            self._next_handle += 1
            self._handles[handle] = (target, bytearray(), overwrite)
            return handle

    def dbfs_add_block(self, handle: Any, data: bytes) -> None:
        self._check_block(data)
        with self._lock:
            if handle not in self._handles:
                raise missing(f"No handle exists with id {handle}.")
            self._handles[handle][1].extend(data)

    def dbfs_close(self, handle: Any) -> None:
        with self._lock:
            if handle not in self._handles:
                raise missing(f"No handle exists with id {handle}.")
            target, data, overwrite = self._handles.pop(handle)
            self._check_dbfs_writable(target, overwrite)
            _write_atomically(self._dbfs_disk(target), bytes(data))

    def dbfs_status(self, path: Any) -> dict[str, Any]:
        target = dbfs_path(path)
        disk = self._dbfs_disk(target)
        if not disk.exists():
            raise missing(f"No file or directory exists on path dbfs:{target}.")
        stat = disk.stat()
        return {
            "path": target,
            "is_dir": disk.is_dir(),
            "file_size": 0 if disk.is_dir() else stat.st_size,
            "modification_time": int(stat.st_mtime * 1000),
        }

    def dbfs_read(self, path: Any, offset: int, length: int) -> dict[str, Any]:
        target = dbfs_path(path)
        disk = self._dbfs_disk(target)
        if disk.is_dir():
            raise invalid(f"Cannot read a directory: dbfs:{target}")
        if not disk.exists():
            raise missing(f"No file or directory exists on path dbfs:{target}.")
        if offset < 0 or length < 0:
            raise invalid("offset and length must not be negative")
        if length > MAX_DBFS_BLOCK:
            raise ApiError(
                400,
                "MAX_READ_SIZE_EXCEEDED",
                f"Cannot read more than {MAX_DBFS_BLOCK} bytes at once; asked for {length}.",
            )
        with disk.open("rb") as source:
            source.seek(offset)
            data = source.read(length)
        return {"bytes_read": len(data), "data": base64.b64encode(data).decode("ascii")}

    # -- what a task sees -------------------------------------------------------------------

    def local_path(self, uri: str) -> Path | None:
        """Where a cluster would find ``uri`` (a python file or a library), or ``None`` for cloud
        URIs (``s3://``, ``abfss://``...) and relative paths, which the fake cannot look into."""
        if uri.startswith("dbfs:/"):
            return self._dbfs_disk(dbfs_path(uri))
        if not uri.startswith("/"):
            return None
        parts = _parts(uri, "path")
        if parts[:1] == ["Volumes"]:
            return self.root.joinpath(*parts)
        return self._workspace_disk(workspace_path(uri))

    def is_notebook(self, uri: str) -> bool:
        if not uri.startswith("/") or uri.startswith("/Volumes/"):
            return False
        with self._lock:
            return workspace_path(uri) in self._notebooks
