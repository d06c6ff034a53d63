"""The one error type of the fake workspace: an answer in Databricks' error shape."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Raised anywhere in the fake; the server turns it into ``{"error_code", "message"}``.

    Codes and statuses follow Databricks' REST reference, because the SDK maps them to its typed
    exceptions (``InvalidParameterValue``, ``ResourceDoesNotExist`` ...): by code, then status.
    """

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error_code": self.error_code, "message": self.message}


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


def missing(message: str) -> ApiError:
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", message)


def exists(message: str) -> ApiError:
    return ApiError(409, "RESOURCE_ALREADY_EXISTS", message)
