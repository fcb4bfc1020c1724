"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx
status, the way OpenAI's API (and llama-server, vLLM) answer. Every refusal in the server is an
``APIError``; the app turns it into that body, never a traceback."""

from __future__ import annotations


class APIError(Exception):
    """A request the server refuses or cannot finish; ``message`` names the problem and the fix."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unsupported(param: str, why: str) -> APIError:
    """A parameter of OpenAI's API this server does not implement, with the reason."""
    return APIError(400, f"'{param}' is not supported here: {why}", param=param, code="unsupported_parameter")
