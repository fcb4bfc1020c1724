"""Hostile and broken requests: each gets a 4xx with a JSON body in OpenAI's error shape naming
the problem, never a traceback, and the server keeps serving (a normal request succeeds after
each). Sent raw with httpx where a well-behaved client could not send them."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import httpx
import pytest

from genai_qwen3vl.testing.server import ServerProcess

from .conftest import PRESET, picture_url

GOOD = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2, "temperature": 0}


def _png_bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A valid PNG of a few hundred bytes whose header says width x height (decoded: ~10 GB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 4)
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _image_message(url: str, text: str = "Describe.") -> dict:
    return {
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}],
        "max_tokens": 2,
    }


def _raw(fragment: bytes) -> bytes:
    """GOOD with one more field, written as raw JSON text (what json.dumps would not write)."""
    return b'{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2, ' + fragment + b"}"


def _tool_arguments(arguments: str) -> dict:
    """An assistant turn whose tool call carries ``arguments`` (a JSON string, as OpenAI sends it)."""
    call = {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return {
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "content": "42"},
        ],
        "max_tokens": 2,
    }


def _video_message(url: str) -> dict:
    return {
        "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "?"}]}],
        "max_tokens": 2,
    }


def _truncated_video(tmp_path_factory) -> str:
    """An AVI cut at 70 %: its header opens and states 16 frames, fewer decode (the error must not
    name the server's temporary file)."""
    from genai_qwen3vl.testing.media import make_frames, write_video

    data = write_video(tmp_path_factory.mktemp("video") / "v.avi", make_frames(16, 64, 64), 4).read_bytes()
    return f"data:video/x-msvideo;base64,{_b64(data[: len(data) * 7 // 10])}"


def _cases(media_dir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    outside.write_bytes(base64.b64decode(picture_url(32, 32, 0).split(",", 1)[1]))
    link = media_dir / "link_to_outside.png"
    if not link.exists():
        link.symlink_to(outside)
    dangling = media_dir / "link_to_missing_outside.png"
    if not dangling.is_symlink():
        dangling.symlink_to(outside.parent / "gone.png")
    return {
        # name: (raw body or JSON, status, code or None, words the message must contain)
        "invalid_json": (b'{"messages": [', 400, None, ["not valid JSON"]),
        "body_not_object": ([1, 2], 400, None, ["JSON object"]),
        "no_messages": ({"temperature": 0}, 400, None, ["messages"]),
        "empty_messages": ({"messages": []}, 400, None, ["messages"]),
        "bad_role": ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, None, ["role"]),
        "unknown_model": ({**GOOD, "model": "gpt-5"}, 404, "model_not_found", ["gpt-5"]),
        "n_2": ({**GOOD, "n": 2}, 400, "unsupported_parameter", ["'n'"]),
        "max_tokens_0": ({**GOOD, "max_tokens": 0}, 400, None, ["max_tokens"]),
        "temperature_5": ({**GOOD, "temperature": 5}, 400, None, ["temperature"]),
        "min_tokens_over_max": ({**GOOD, "min_tokens": 5}, 400, None, ["min_tokens"]),
        "both_max_tokens": ({**GOOD, "max_completion_tokens": 3}, 400, None, ["max_completion_tokens"]),
        "logprobs": ({**GOOD, "logprobs": True}, 400, "unsupported_parameter", ["logprobs"]),
        "json_schema_invalid": (
            {**GOOD, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}},
            400,
            "invalid_constraint",
            ["not a valid JSON Schema"],
        ),
        "tool_choice_unknown_function": (
            {
                **GOOD,
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            400,
            None,
            ["not among the tools"],
        ),
        "audio_part": (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]},
            400,
            "unsupported_parameter",
            ["input_audio"],
        ),
        "malformed_base64": (_image_message("data:image/png;base64,iVBORw0K!!!notbase64"), 400, "invalid_base64", ["base64"]),
        "data_url_not_image": (_image_message(f"data:text/plain;base64,{_b64(b'hello')}"), 400, "invalid_image", ["text/plain"]),
        "image_bytes_not_image": (
            _image_message(f"data:image/png;base64,{_b64(b'GIF89a but not really' * 20)}"),
            400,
            "invalid_image",
            ["not an image"],
        ),
        "not_base64_data_url": (_image_message("data:image/png,rawbytes"), 400, "invalid_data_url", ["base64"]),
        "pixel_bomb": (_image_message(f"data:image/png;base64,{_b64(_png_bomb())}"), 400, "image_too_large", ["too large"]),
        "marker_without_image": (
            {"messages": [{"role": "user", "content": "<|vision_start|><|image_pad|><|vision_end|> what?"}]},
            400,
            "invalid_media",
            ["image markers"],
        ),
        "path_outside_allowed": (_image_message(str(outside)), 403, "media_path_not_allowed", ["--allowed-media-dir"]),
        "symlink_escape": (_image_message(str(link)), 403, "media_path_not_allowed", ["--allowed-media-dir"]),
        "missing_file": (_image_message(str(media_dir / "nope.png")), 400, "media_not_found", ["does not exist"]),
        "http_url": (_image_message("http://127.0.0.1:9/cat.png"), 400, "remote_media_refused", ["no outbound requests"]),
        "https_url": (_image_message("https://example.invalid/cat.png"), 400, "remote_media_refused", ["no outbound requests"]),
        "video_garbage": (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{_b64(b'x' * 500)}"}}]}
                ]
            },
            400,
            "invalid_video",
            ["video"],
        ),
        "mm_unknown_key": ({**GOOD, "mm_processor_kwargs": {"max_pixles": 100}}, 400, None, ["max_pixles"]),
        "mm_max_pixels_over_checkpoint": ({**GOOD, "mm_processor_kwargs": {"max_pixels": 10**9}}, 400, None, ["checkpoint's limit"]),
        "mm_min_pixels_below_patch": ({**GOOD, "mm_processor_kwargs": {"min_pixels": 10}}, 400, None, ["merged patch"]),
        "mm_fps_negative": ({**GOOD, "mm_processor_kwargs": {"fps": -1}}, 400, None, ["fps"]),
        "template_kwargs_reserved": ({**GOOD, "chat_template_kwargs": {"messages": []}}, 400, None, ["may not set"]),
        "prompt_longer_than_context": (
            {"messages": [{"role": "user", "content": "picture frame " * 5000}]},
            400,
            "context_length_exceeded",
            ["context"],
        ),
        "max_tokens_over_context": ({**GOOD, "max_tokens": 10**6}, 400, "context_length_exceeded", ["context"]),
        # JSON parsed strictly, numbers finite, sizes bounded: each a 400
        "nested_100000_deep": (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, None, ["not valid JSON", "200 levels"]),
        "integer_of_5000_digits": (_raw(b'"max_tokens": ' + b"9" * 5000), 400, None, ["not valid JSON", "4300"]),
        "max_tokens_1e400": (_raw(b'"max_tokens": 1e400'), 400, None, ["max_tokens", "finite"]),
        "temperature_1e400": (_raw(b'"temperature": 1e400'), 400, None, ["temperature", "finite"]),
        "top_k_2_to_31": ({**GOOD, "top_k": 2**31}, 400, None, ["top_k"]),
        "temperature_nan": (_raw(b'"temperature": NaN'), 400, None, ["NaN and Infinity are not JSON"]),
        "top_p_nan": (_raw(b'"top_p": NaN'), 400, None, ["NaN and Infinity are not JSON"]),
        "repetition_penalty_infinity": (_raw(b'"repetition_penalty": Infinity'), 400, None, ["NaN and Infinity are not JSON"]),
        "temperature_minus_infinity": (_raw(b'"temperature": -Infinity'), 400, None, ["NaN and Infinity are not JSON"]),
        "nul_byte_in_media_path": (_image_message(str(media_dir / "a\0b.png")), 400, "invalid_media_path", ["NUL"]),
        "lone_surrogate_in_text": (b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}]}', 400, None, ["surrogate"]),
        "tool_arguments_nested_5000_deep": (_tool_arguments("[" * 5000 + "]" * 5000), 400, None, ["arguments", "200 levels"]),
        "tool_arguments_nan": (_tool_arguments('{"x": NaN}'), 400, None, ["arguments", "NaN"]),
        # item 20: outside --allowed-media-dir, a missing path gets the answer an existing one gets
        "missing_path_outside": (
            _image_message(str(outside.parent / "no-such.png")),
            403,
            "media_path_not_allowed",
            ["--allowed-media-dir"],
        ),
        "missing_path_via_dotdot": (_image_message(f"{media_dir}/../no-such.png"), 403, "media_path_not_allowed", ["--allowed-media-dir"]),
        "symlink_to_missing_outside": (_image_message(str(dangling)), 403, "media_path_not_allowed", ["--allowed-media-dir"]),
        # item 23: errors quote a short prefix of the input, no server paths, the server's own limit
        "upper_case_data_url_of_2mb": (_image_message("DATA:image/png;base64," + "A" * 2_000_000), 400, "invalid_image", ["not an image"]),
        "role_of_100000_characters": ({"messages": [{"role": "x" * 100_000, "content": "hi"}]}, 400, None, ["role", "100000 characters"]),
        "model_of_100000_characters": ({**GOOD, "model": "m" * 100_000}, 404, "model_not_found", ["does not exist"]),
        "mm_key_of_100000_characters": ({**GOOD, "mm_processor_kwargs": {"k" * 100_000: 1}}, 400, None, ["mm_processor_kwargs"]),
        "media_type_of_100000_characters": (_image_message("data:" + "x" * 100_000 + ";base64,AAAA"), 400, "invalid_image", []),
        "video_truncated_after_its_header": (_video_message(_truncated_video(tmp_path_factory)), 400, None, ["video 0", "frames"]),
        "prompt_over_the_checkpoints_context": (
            {"messages": [{"role": "user", "content": "a b " * 150_000}], "max_tokens": 2},
            400,
            "context_length_exceeded",
            ["this model's context is"],
        ),
    }


CASES = [
    "invalid_json",
    "body_not_object",
    "no_messages",
    "empty_messages",
    "bad_role",
    "unknown_model",
    "n_2",
    "max_tokens_0",
    "temperature_5",
    "min_tokens_over_max",
    "both_max_tokens",
    "logprobs",
    "json_schema_invalid",
    "tool_choice_unknown_function",
    "audio_part",
    "malformed_base64",
    "data_url_not_image",
    "image_bytes_not_image",
    "not_base64_data_url",
    "pixel_bomb",
    "marker_without_image",
    "path_outside_allowed",
    "symlink_escape",
    "missing_file",
    "http_url",
    "https_url",
    "video_garbage",
    "mm_unknown_key",
    "mm_max_pixels_over_checkpoint",
    "mm_min_pixels_below_patch",
    "mm_fps_negative",
    "template_kwargs_reserved",
    "prompt_longer_than_context",
    "max_tokens_over_context",
    "nested_100000_deep",
    "integer_of_5000_digits",
    "max_tokens_1e400",
    "temperature_1e400",
    "top_k_2_to_31",
    "temperature_nan",
    "top_p_nan",
    "repetition_penalty_infinity",
    "temperature_minus_infinity",
    "nul_byte_in_media_path",
    "lone_surrogate_in_text",
    "tool_arguments_nested_5000_deep",
    "tool_arguments_nan",
    "missing_path_outside",
    "missing_path_via_dotdot",
    "symlink_to_missing_outside",
    "upper_case_data_url_of_2mb",
    "role_of_100000_characters",
    "model_of_100000_characters",
    "mm_key_of_100000_characters",
    "media_type_of_100000_characters",
    "video_truncated_after_its_header",
    "prompt_over_the_checkpoints_context",
]
MAX_ERROR_BYTES = 2000  # an error quotes at most a short prefix of what the client sent


def assert_error(response: httpx.Response, status: int, code: str | None, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert code is None or error["code"] == code, error
    for word in words:
        assert word in error["message"], error
    assert "Traceback" not in error["message"]
    assert len(response.content) <= MAX_ERROR_BYTES, f"{len(response.content)} bytes: {response.text[:300]}"
    assert "genai-qwen3vl-video-" not in response.text, error  # the server's temporary files stay its own
    return error


def assert_still_serving(base_url: str, headers: dict | None = None) -> None:
    r = httpx.post(f"{base_url}/v1/chat/completions", json=GOOD, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("case", CASES)
def test_hostile_request_gets_a_clear_4xx_and_the_server_goes_on(case, served, media_dir, tmp_path_factory):
    body, status, code, words = _cases(media_dir, tmp_path_factory)[case]
    if isinstance(body, bytes):
        r = httpx.post(f"{served.base_url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=60)
    else:
        r = httpx.post(f"{served.base_url}/v1/chat/completions", json=body, timeout=60)
    assert_error(r, status, code, *words)
    assert_still_serving(served.base_url)


def test_unknown_route_and_method_answer_in_openai_shape(served):
    assert_error(httpx.get(f"{served.base_url}/v1/completions-of-nothing"), 404, None, "no route")
    assert_error(httpx.get(f"{served.base_url}/v1/chat/completions"), 405, None, "GET")
    assert_error(httpx.get(f"{served.base_url}/v1/models/other-model"), 404, "model_not_found", "other-model")


def test_top_k_above_the_vocabulary_cuts_nothing(served):
    """og refuses a top_k above the vocabulary (we clamp it rather than answer 500); the largest 32-bit value is no cut."""
    r = httpx.post(f"{served.base_url}/v1/chat/completions", json={**GOOD, "top_k": 2**31 - 1, "temperature": 1.0}, timeout=60)
    assert r.status_code == 200, r.text


def test_an_upper_case_data_url_is_a_data_url(served):
    """URL schemes are case-insensitive (RFC 3986): ``DATA:`` was taken for a file path."""
    body = _image_message("DATA:image/png;BASE64," + picture_url(32, 32, 1).split(",", 1)[1])
    r = httpx.post(f"{served.base_url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text


def test_no_request_above_left_a_traceback_in_the_server_log(served):
    """Run after the hostile cases (same session server): nothing reached the 500 path."""
    assert "Traceback" not in served.log()
    assert " 500 " not in served.log()


@pytest.fixture(scope="module")
def strict(exported, tmp_path_factory):
    """A server with an API key, a small body limit, two images per request, a 64-token context."""
    server = ServerProcess(
        exported(PRESET),
        "--max-request-bytes",
        "1000000",
        "--limit-images",
        "2",
        "--max-model-len",
        "64",
        "--max-image-pixels",
        str(STRICT_MAX_PIXELS),
        *SLOW_FLAGS,
        log_dir=tmp_path_factory.mktemp("strict_logs"),
        api_key="s3cret",
    )
    with server:
        yield server


STRICT_MAX_PIXELS = 32 * 32 * 8
HEADER_S, BODY_S, KEEP_ALIVE_S = 1.0, 2.0, 1.0
SLOW_FLAGS = ("--header-timeout", str(HEADER_S), "--body-timeout", str(BODY_S), "--keep-alive-timeout", str(KEEP_ALIVE_S))


def test_server_image_budget_flag(strict, served):
    """--max-image-pixels sets the default budget: the image gets smart_resize's grid for it."""
    from genai_qwen3vl.runtime.images import smart_resize

    body = {**_image_message(picture_url(300, 420, 5)), "max_tokens": 1}
    tokens = {}
    for name, server, headers in (("strict", strict, {"Authorization": "Bearer s3cret"}), ("default", served, None)):
        r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        tokens[name] = r.json()["usage"]["prompt_tokens"]
    low, high = (
        json.loads((Path(served.proc.args[3]) / "preprocessor_config.json").read_text())["size"][k]
        for k in ("shortest_edge", "longest_edge")
    )
    (sh, sw), (dh, dw) = smart_resize(300, 420, 32, low, STRICT_MAX_PIXELS), smart_resize(300, 420, 32, low, high)
    assert tokens["default"] - tokens["strict"] == dh * dw // 1024 - sh * sw // 1024 > 0


def test_api_key(strict):
    import openai

    url = f"{strict.base_url}/v1/chat/completions"
    assert_error(httpx.post(url, json=GOOD), 401, "invalid_api_key", "missing API key")
    assert_error(httpx.post(url, json=GOOD, headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key", "incorrect")
    assert_error(httpx.get(f"{strict.base_url}/v1/models", headers={"Authorization": "Basic s3cret"}), 401, "invalid_api_key")
    assert_error(httpx.get(f"{strict.base_url}/metrics"), 401, "invalid_api_key")
    assert httpx.get(f"{strict.base_url}/health").status_code == 200  # probes need no key
    bad = openai.OpenAI(base_url=f"{strict.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=strict_model(strict), messages=GOOD["messages"], max_tokens=2)
    good = openai.OpenAI(base_url=f"{strict.base_url}/v1", api_key="s3cret", max_retries=0)
    r = good.chat.completions.create(model=strict_model(strict), messages=GOOD["messages"], max_tokens=2)
    assert r.choices[0].message.content is not None and r.usage.completion_tokens >= 1


def strict_model(server) -> str:
    return httpx.get(f"{server.base_url}/v1/models", headers={"Authorization": "Bearer s3cret"}).json()["data"][0]["id"]


def test_api_key_from_the_environment(exported, tmp_path):
    server = ServerProcess(exported(PRESET), log_dir=tmp_path, env={"GENAI_QWEN3VL_API_KEY": "from-env"})
    with server:
        assert httpx.get(f"{server.base_url}/v1/models").status_code == 401
        assert httpx.get(f"{server.base_url}/v1/models", headers={"Authorization": "Bearer from-env"}).status_code == 200


@pytest.mark.parametrize("case", ["body_over_limit", "too_many_images", "prompt_over_max_model_len"])
def test_limits(case, strict):
    headers = {"Authorization": "Bearer s3cret"}
    url = f"{strict.base_url}/v1/chat/completions"
    if case == "body_over_limit":
        big = _image_message("data:image/png;base64," + "A" * 1_200_000)
        assert_error(httpx.post(url, json=big, headers=headers), 413, "request_too_large", "--max-request-bytes")
    elif case == "too_many_images":
        parts = [{"type": "image_url", "image_url": {"url": picture_url(32, 32, i)}} for i in range(3)]
        body = {"messages": [{"role": "user", "content": parts}], "max_tokens": 2}
        assert_error(httpx.post(url, json=body, headers=headers), 400, "too_many_images", "at most 2")
    else:
        body = {"messages": [{"role": "user", "content": "picture frame " * 40}], "max_tokens": 2}
        assert_error(httpx.post(url, json=body, headers=headers), 400, "context_length_exceeded", "64 tokens")
    assert_still_serving(strict.base_url, headers)


# what each slow client sends first; then one byte every DRIP_S (none for the idle ones)
SLOW_CLIENTS = {
    "idle": (b"", None),
    "header_drip": (b"POST /v1/chat/completions HTTP/1.1\r\n", b"X"),
    "body_drip": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
        b" ",
    ),
    "idle_after_an_answer": (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", None),
    "header_drip_after_an_answer": (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\n", b"X"),
    "body_drip_after_an_answer": (b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{", b" "),  # 405 at once
}
DRIP_S = 0.2


def _slow_client(port: int, kind: str, give_up: float) -> tuple[float | None, bytes]:
    """One raw connection behaving as ``kind``: (seconds until the server closed it, or None if it
    was still open after ``give_up``; what the server sent)."""
    import select
    import socket
    import time

    first, drip = SLOW_CLIENTS[kind]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        start, received = time.monotonic(), b""
        sock.sendall(first)
        while time.monotonic() - start < give_up:
            if select.select([sock], [], [], DRIP_S)[0]:
                try:
                    data = sock.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    return time.monotonic() - start, received
                received += data
            elif drip:
                try:
                    sock.sendall(drip)
                except OSError:  # closed under us
                    return time.monotonic() - start, received
        return None, received


def test_slow_clients_are_cut_off(strict):
    """Connections that send nothing, drip their headers or body, or linger after an answer are
    closed at --header-timeout / --body-timeout / --keep-alive-timeout, 4 of each kind at once; the body drip gets a 408 first."""
    from concurrent.futures import ThreadPoolExecutor

    port = int(strict.base_url.rsplit(":", 1)[1])
    give_up = BODY_S + 6
    kinds = [kind for kind in SLOW_CLIENTS for _ in range(4)]
    with ThreadPoolExecutor(len(kinds)) as pool:
        results = list(pool.map(lambda kind: _slow_client(port, kind, give_up), kinds))
    for kind, (seconds, received) in zip(kinds, results, strict=True):
        deadline = BODY_S if kind == "body_drip" else min(HEADER_S, KEEP_ALIVE_S)
        assert seconds is not None, f"{kind}: still open after {give_up} s"
        assert deadline - 0.3 <= seconds <= deadline + 2.5, f"{kind}: closed after {seconds:.2f} s, not at its {deadline} s deadline"
        if kind == "body_drip":
            assert received.startswith(b"HTTP/1.1 408 "), received[:200]
            assert b"--body-timeout" in received and b'"code":"request_timeout"' in received, received
    assert_still_serving(strict.base_url, {"Authorization": "Bearer s3cret"})
    assert "Traceback" not in strict.log()
