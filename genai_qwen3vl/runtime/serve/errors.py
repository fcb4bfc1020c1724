"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx
status, the way OpenAI's API (and llama-server, vLLM) answer. Every refusal in the server is an
``APIError``; the app turns it into that body, never a traceback."""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE = 1000  # characters of an error message; a client's input is quoted only as a short prefix
QUOTE = 40  # characters of client input an error message quotes


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
        message = self.message if len(self.message) <= MAX_MESSAGE else self.message[:MAX_MESSAGE] + "..."
        param = self.param if self.param is None or len(self.param) <= MAX_MESSAGE else self.param[:MAX_MESSAGE] + "..."
        return {"error": {"message": message, "type": self.type, "param": param, "code": self.code}}


def quote(value: Any, limit: int = QUOTE) -> str:
    """Client input as an error message shows it: JSON, cut to ``limit`` characters (a 63 MB
    string in, a few dozen characters out), lists and objects by their size only."""
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    if isinstance(value, str) and len(value) > limit:
        return json.dumps(value[:limit])[:-1] + f'..." ({len(value)} characters)'
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3 * limit:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unsupported(param: str, why: str) -> APIError:
    """A parameter of OpenAI's API this server does not implement, with the reason."""
    return APIError(400, f"'{param}' is not supported here: {why}", param=param, code="unsupported_parameter")
