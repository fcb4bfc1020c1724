"""The API fuzzed against its own OpenAPI schema: schemathesis generates requests from
``/openapi.json`` (bodies that follow it, and bodies that break it) and sends them to the real
server; every answer is a 2xx or a 4xx in OpenAI's error shape, never a 5xx, the JSON answers
are what the schema says they are, and the server keeps serving."""

from __future__ import annotations

import collections

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import response_schema_conformance

EXAMPLES = 100  # per operation and mode: a few hundred requests in all
MAX_TOKENS = 2  # generated answers stay short; the bounds in the schema stay the real ones


def _short(case) -> None:
    """Caps the answer's length (the requests are otherwise as generated)."""
    body = case.body
    if case.path == "/v1/chat/completions" and isinstance(body, dict):
        for key in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(key), int) and not isinstance(body.get(key), bool):
                body[key] = min(body[key], MAX_TOKENS)
        if body.get("max_completion_tokens") is None:
            body["max_tokens"] = min(body["max_tokens"], MAX_TOKENS) if isinstance(body.get("max_tokens"), int) else MAX_TOKENS


def _openai_error(response) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


def _fuzz(operation, mode: GenerationMode, base_url: str, counts: collections.Counter, problems: list[str]) -> None:
    """EXAMPLES requests for ``operation`` in ``mode``, each answer checked; problems collected."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def send(case):
        _short(case)
        response = case.call(base_url=base_url, timeout=120)
        counts["requests"] += 1
        counts[(case.path, mode.value)] += 1
        counts[f"{response.status_code // 100}xx"] += 1
        where = f"{case.method} {case.formatted_path} ({mode.value}) -> {response.status_code}: {response.text[:300]}"
        if response.status_code >= 500 or response.status_code < 200 or 300 <= response.status_code < 400:
            problems.append(where)
        elif response.status_code >= 400 and not _openai_error(response):
            problems.append(f"not OpenAI's error shape: {where}")
        elif response.status_code < 300 and "application/json" in str(response.headers.get("content-type")):
            try:
                case.validate_response(response, checks=[response_schema_conformance])
            except Exception as exc:  # noqa: BLE001 - collected, reported together below
                problems.append(f"not what the schema says: {where}: {str(exc)[:500]}")

    try:
        send()
    except Unsatisfiable:  # no body, and parameters that take any string: nothing to break
        assert mode is GenerationMode.NEGATIVE and not operation.body, operation.path


def test_generated_requests_get_a_2xx_or_an_openai_4xx_never_a_5xx(served, capsys):
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    counts: collections.Counter = collections.Counter()
    problems: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/models", "/v1/models/{name}", "/health"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, served.base_url, counts, problems)
    with capsys.disabled():
        print(
            f"\nschemathesis: {counts['requests']} generated requests, {counts['5xx']} answered 5xx "
            f"({counts['2xx']} 2xx, {counts['4xx']} 4xx)"
        )
    assert not problems, "\n".join(problems[:20])
    for mode in GenerationMode:  # the operations without parameters are one request each
        assert counts[("/v1/chat/completions", mode.value)] >= EXAMPLES // 2, counts
    health = httpx.get(f"{served.base_url}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    assert "Traceback" not in served.log()
