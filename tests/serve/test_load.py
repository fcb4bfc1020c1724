"""Concurrency and lifetime on a real server: a burst of 32 clients against 2 slots and a queue of
8, a client that disconnects mid-stream, SIGTERM with a request in flight."""

from __future__ import annotations

import re
import signal
import threading
import time

import httpx
import pytest

from genai_qwen3vl.testing.server import ServerProcess

from .conftest import PRESET

PROMPTS = ["Write a poem.", "Describe this image in detail.", "Count the cats, the dogs and the birds.", "What colour is the sky?"]
# tokens each burst request generates: a request is prepared only once it holds a slot, so the queue fills only
# while the slots are busy generating (a reply ending after a few tokens frees them faster than 32 clients connect)
BURST = 300
LONG = 6000  # tokens (min_tokens too): long enough to be mid-stream when the client acts (the tiny model writes thousands of tokens/s)


def _ask(base_url: str, prompt: str, max_tokens: int, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0, **extra}
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=120)


def metric(base_url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{base_url}/metrics").text
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def busy(exported, tmp_path_factory):
    server = ServerProcess(exported(PRESET), "--max-concurrency", "2", "--max-queue", "8", log_dir=tmp_path_factory.mktemp("busy_logs"))
    with server:
        yield server


def _burst(base_url: str, clients: int = 32) -> list[tuple[str, httpx.Response]]:
    """``clients`` requests released at once, each from its own thread."""
    barrier = threading.Barrier(clients)
    results: list[tuple[str, httpx.Response]] = [None] * clients  # type: ignore[list-item]

    def client(i: int) -> None:
        prompt = PROMPTS[i % len(PROMPTS)]
        barrier.wait()
        results[i] = (prompt, _ask(base_url, prompt, BURST, min_tokens=BURST))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def test_burst_of_32_clients_gets_answers_or_429(busy):
    expected = {p: _ask(busy.base_url, p, BURST, min_tokens=BURST).json()["choices"][0]["message"]["content"] for p in PROMPTS}
    for p in PROMPTS:  # greedy answers are stable
        assert _ask(busy.base_url, p, BURST, min_tokens=BURST).json()["choices"][0]["message"]["content"] == expected[p]
    # A first burst brings the server to its steady state (worker threads, their malloc arenas);
    # the burst measured after it must leave no memory behind.
    _burst(busy.base_url)
    time.sleep(0.5)
    before = busy.rss_bytes()
    results = _burst(busy.base_url)
    done = [(p, r) for p, r in results if r.status_code == 200]
    refused = [r for _, r in results if r.status_code == 429]
    assert len(done) + len(refused) == 32, [r.status_code for _, r in results]
    assert done and refused, f"{len(done)} answered, {len(refused)} refused: the queue limit was not exercised"
    assert len(done) >= 10  # 2 running + 8 queued at the burst's start all finish
    for prompt, r in done:
        assert r.json()["choices"][0]["message"]["content"] == expected[prompt]
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
    time.sleep(0.5)
    assert httpx.get(f"{busy.base_url}/health").json()["running"] == 0
    after = busy.rss_bytes()
    assert abs(after - before) <= 0.10 * before, f"RSS {before / 2**20:.0f} MiB before the burst, {after / 2**20:.0f} MiB after"
    assert metric(busy.base_url, "genai_qwen3vl_requests_total", '{path="/v1/chat/completions",status="429"}') >= len(refused)


def test_disconnect_mid_stream_frees_the_slot(exported, tmp_path):
    with ServerProcess(exported(PRESET), "--max-concurrency", "1", "--max-queue", "4", log_dir=tmp_path) as server:
        body = {
            "messages": [{"role": "user", "content": PROMPTS[0]}],
            "max_tokens": LONG,
            "min_tokens": LONG,
            "temperature": 0,
            "stream": True,
        }
        with httpx.Client(timeout=60) as c, c.stream("POST", f"{server.base_url}/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            for _ in range(6):
                next(lines)
        # the client is gone; its generation stops and frees the only slot
        start = time.monotonic()
        answer = _ask(server.base_url, PROMPTS[1], 4)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4
        deadline = time.monotonic() + 10
        while metric(server.base_url, "genai_qwen3vl_generations_total", '{finish_reason="cancelled"}') < 1:
            assert time.monotonic() < deadline, "the abandoned generation was never cancelled"
            time.sleep(0.05)
        cancelled_tokens = metric(server.base_url, "genai_qwen3vl_generation_tokens_total") - 4
        assert cancelled_tokens < LONG / 2, f"the abandoned stream generated {cancelled_tokens:.0f} of {LONG} tokens"
        assert time.monotonic() - start < 10


def test_sigterm_drains_the_request_in_flight_then_exits(exported, tmp_path):
    server = ServerProcess(exported(PRESET), "--max-concurrency", "1", log_dir=tmp_path).wait_ready()
    body = {
        "messages": [{"role": "user", "content": PROMPTS[0]}],
        "max_tokens": LONG,
        "min_tokens": LONG,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = []
    with httpx.Client(timeout=120) as c, c.stream("POST", f"{server.base_url}/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        events.append(next(lines))
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # no new connections while draining
            httpx.get(f"{server.base_url}/health", timeout=5)
        events += [line for line in lines if line]
    assert events[-1] == "data: [DONE]"
    usage = httpx.Response(200, content=events[-2][len("data: ") :]).json()["usage"]
    finish = [e for e in events if '"finish_reason": "' in e]
    assert finish and ('"length"' in finish[-1] or '"stop"' in finish[-1])
    assert usage["completion_tokens"] > 0
    assert server.proc.wait(60) == 0
    assert "Traceback" not in server.log()


def test_timeout(exported, tmp_path):
    """A request past --timeout: 408 in OpenAI's shape, or an error event when streaming; the slot is freed."""
    with ServerProcess(exported(PRESET), "--timeout", "0.3", log_dir=tmp_path) as server:
        r = _ask(server.base_url, PROMPTS[0], LONG, min_tokens=LONG)
        assert r.status_code == 408 and r.json()["error"]["code"] == "timeout", r.text
        body = {
            "messages": [{"role": "user", "content": PROMPTS[0]}],
            "max_tokens": LONG,
            "min_tokens": LONG,
            "temperature": 0,
            "stream": True,
        }
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60) as s:
            lines = [line for line in s.iter_lines() if line]
        assert lines[-1] == "data: [DONE]" and '"code": "timeout"' in lines[-2], lines[-2:]
        ok = _ask(server.base_url, PROMPTS[1], 2)
        assert ok.status_code == 200, ok.text
