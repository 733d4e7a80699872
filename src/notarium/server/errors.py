"""ACL's error responses: ``{"error": {"code", "message"}}`` with ACL's codes and statuses."""

from __future__ import annotations

import json

from aiohttp import web


class ApiError(Exception):
    """An error answer. Client errors are 4xx and never carry Retry-After (acl-rest-api.md §2.6)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message)


def error_response(status: int, code: str, message: str) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, text=body, content_type="application/json")


def bad_input(message: str) -> ApiError:
    return ApiError(400, "InvalidInput", message)


def not_found(message: str, code: str = "ResourceNotFound") -> ApiError:
    return ApiError(404, code, message)
