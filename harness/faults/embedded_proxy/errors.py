"""Toxiproxy's error answers: an `ApiError` carries the message and status that api.go would write.

Every layer below the API (the Go-style body decoding, the address rules, the toxic attributes) raises
these, and the API turns them into `{"error": message, "status": status}` responses; the message texts
are Toxiproxy's own, since clients match on them.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answered as Toxiproxy does: `{"error": message, "status": status}`."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def bad_body(detail: str) -> ApiError:
    return ApiError(f"bad request body: {detail}", 400)


def missing_field(what: str) -> ApiError:
    return ApiError(f"missing required field: {what}", 400)


def proxy_not_found() -> ApiError:
    return ApiError("proxy not found", 404)


def toxic_not_found() -> ApiError:
    return ApiError("toxic not found", 404)
