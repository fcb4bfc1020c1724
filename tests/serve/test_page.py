"""The chat page of ``genai-qwen3vl serve`` (genai_qwen3vl/runtime/serve/static) in a real browser:
Debian's Chromium driven by Playwright, against the server of the ``served`` fixture (a tiny random
model: gibberish answers, but real streaming, usage and multi-turn)."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from genai_qwen3vl.testing.media import make_picture
from genai_qwen3vl.testing.tiny import SCRIPTED_REASONING, SCRIPTED_TOOL_JSON

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # one answer of the tiny model on a CPU, with room
KEY_STORAGE = "genai-qwen3vl.api-key"  # the localStorage item app.js keeps the API key in
USAGE_LINE = re.compile(r"\d+ prompt \+ \d+ completion tokens")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/setup.sh installs it)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"the playwright Python package is missing ({e}): pip install playwright", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def tab(browser, served):
    """A fresh browser context and page; ``errors`` collects console errors and uncaught exceptions."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    requests: list[dict] = []  # bodies of the chat completion requests the page sent

    def on_request(request):
        if request.url.endswith("/v1/chat/completions") and request.post_data:
            requests.append(json.loads(request.post_data))

    page.on("request", on_request)
    yield SimpleNamespace(page=page, context=context, errors=errors, requests=requests, served=served)
    context.close()


def _expect():
    from playwright.sync_api import expect

    return expect


def _picture(tmp_path: Path, name: str, height: int, width: int, seed: int) -> Path:
    path = tmp_path / name
    Image.fromarray(make_picture(height, width, seed)).save(path)
    return path


def _model_id(served) -> str:
    request = urllib.request.Request(f"{served.base_url}/v1/models")
    if served.api_key:
        request.add_header("Authorization", f"Bearer {served.api_key}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"][0]["id"]


def _open(tab, with_key: bool = True):
    """Loads the page, the API key (if the server wants one) already in localStorage."""
    if with_key and tab.served.api_key:
        tab.context.add_init_script(f"localStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(tab.served.api_key)})")
    tab.page.goto(f"{tab.served.base_url}/")
    _expect()(tab.page.locator("#model-name")).to_have_attribute("data-state", "ok")


def _wait_answer(page, index: int):
    """The index-th answer once streaming has finished (app.js sets data-done="1" on it)."""
    answer = page.locator("#messages .answer").nth(index)
    _expect()(answer).to_have_attribute("data-done", "1")
    _expect()(page.locator("#send")).to_be_enabled()
    _expect()(page.locator("#stop")).to_be_disabled()
    return answer


def _rect(page, element_js: str) -> dict:
    """The displayed rectangle of the element a JavaScript expression gives."""
    js = f"(() => {{ const r = ({element_js}).getBoundingClientRect(); return {{x: r.x, y: r.y, w: r.width, h: r.height}}; }})()"
    return page.evaluate(js)


def test_chat_two_turns_with_an_image(tab, tmp_path):
    page, served = tab.page, tab.served
    expect = _expect()
    if served.api_key:
        # without a key the page says one is needed; entered, it is used and kept
        page.goto(f"{served.base_url}/")
        expect(page.locator("#model-name")).to_have_attribute("data-state", "auth")
        expect(page.locator("#status")).to_contain_text("API key")
        page.fill("#api-key", served.api_key)
        page.press("#api-key", "Enter")
        expect(page.locator("#model-name")).to_have_attribute("data-state", "ok")
        # the browser logs the 401 of /v1/models as a failed resource load: expected here, nothing else
        assert all("401" in e for e in tab.errors), tab.errors
        tab.errors.clear()
        page.reload()
    else:
        page.goto(f"{served.base_url}/")
    expect(page.locator("#model-name")).to_have_attribute("data-state", "ok")
    expect(page.locator("#model-name")).to_have_text(_model_id(served))

    # turn 1: an image from the file picker, a system prompt, few tokens
    picture = _picture(tmp_path, "picture.png", 96, 128, seed=3)
    page.set_input_files("#file", str(picture))
    expect(page.locator("#attachments img")).to_have_count(1)
    page.fill("#system", "You are a terse assistant.")
    page.fill("#max-tokens", "24")
    page.fill("#prompt", "What is in this picture?")
    page.click("#send")
    answer = _wait_answer(page, 0)
    first = answer.text_content()
    assert first.strip(), "the first answer is empty"
    expect(page.locator("#attachments img")).to_have_count(0)
    expect(page.locator("#messages .msg.user img")).to_have_count(1)
    expect(page.locator("#messages .msg.assistant .usage").nth(0)).to_contain_text(USAGE_LINE)
    assert page.locator("#messages .msg.assistant .error").nth(0).is_hidden(), page.locator(".error").nth(0).text_content()

    # turn 2, sent with Enter: the whole conversation goes again
    page.fill("#prompt", "And which colours?")
    page.press("#prompt", "Enter")
    second = _wait_answer(page, 1).text_content()
    assert second.strip(), "the second answer is empty"
    expect(page.locator("#messages .msg.user")).to_have_count(2)
    expect(page.locator("#messages .msg.assistant .usage").nth(1)).to_contain_text(USAGE_LINE)

    assert len(tab.requests) == 2, tab.requests
    one, two = tab.requests
    for body in (one, two):
        assert body["model"] == _model_id(served)
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["max_tokens"] == 24 and "temperature" not in body
    assert [m["role"] for m in one["messages"]] == ["system", "user"]
    assert [m["role"] for m in two["messages"]] == ["system", "user", "assistant", "user"]
    assert two["messages"][0] == {"role": "system", "content": "You are a terse assistant."}
    image_part, text_part = two["messages"][1]["content"]
    assert image_part["type"] == "image_url" and image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert text_part == {"type": "text", "text": "What is in this picture?"}
    assert two["messages"][2] == {"role": "assistant", "content": first}
    assert two["messages"][3] == {"role": "user", "content": "And which colours?"}

    screenshot = tmp_path / "page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0

    page.click("#new-chat")
    expect(page.locator("#messages .msg")).to_have_count(0)
    assert tab.errors == []


BOXES_JSON = """Found them:
```json
[
  {"bbox_2d": [100, 150, 400, 600], "label": "cat"},
  {"bbox_2d": [500, 500, 950, 900], "label": "<b>dog</b>"}
]
```"""
BOXES_TOKENS = (
    "There is <|object_ref_start|>a disc<|object_ref_end|><|box_start|>(250,250),(750,750)<|box_end|> and "
    "<|box_start|>(0, 0), (1000, 500)<|box_end|>."
)


def test_grounding_boxes(tab, tmp_path):
    page = tab.page
    expect = _expect()
    _open(tab)

    parse = "t => window.parseBoxes(t)"
    assert page.evaluate(parse, BOXES_JSON) == [
        {"label": "cat", "x1": 100, "y1": 150, "x2": 400, "y2": 600},
        {"label": "<b>dog</b>", "x1": 500, "y1": 500, "x2": 950, "y2": 900},
    ]
    assert page.evaluate(parse, BOXES_TOKENS) == [
        {"label": "a disc", "x1": 250, "y1": 250, "x2": 750, "y2": 750},
        {"label": "", "x1": 0, "y1": 0, "x2": 1000, "y2": 500},
    ]
    assert page.evaluate(parse, '{"bbox_2d": [1, 2, 3, 4]}') == [{"label": "", "x1": 1, "y1": 2, "x2": 3, "y2": 4}]
    # a list cut short while streaming: its complete objects count
    assert page.evaluate(parse, '[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6') == [
        {"label": "a", "x1": 1, "y1": 2, "x2": 3, "y2": 4}
    ]
    assert page.evaluate(parse, "A cat [sitting] on {a mat}, no boxes (1,2),(3,4) here.") == []
    assert page.evaluate(parse, "") == []

    # drawBoxes on an image shown at two sizes: the boxes follow the displayed size
    picture = _picture(tmp_path, "boxes.png", 120, 160, seed=5)
    page.set_input_files("#file", str(picture))
    expect(page.locator("#attachments img")).to_have_count(1)
    page.evaluate(
        """() => new Promise((resolve) => {
            const img = document.createElement('img');
            img.id = 'box-test';
            img.style.width = '400px';
            img.onload = resolve;
            img.src = document.querySelector('#attachments img').src;
            document.querySelector('#messages').appendChild(img);
        })"""
    )
    page.evaluate(
        "boxes => window.drawBoxes(document.querySelector('#box-test'), boxes)",
        [{"label": "quarter", "x1": 0, "y1": 0, "x2": 500, "y2": 500}, {"label": "", "x1": 1000, "y1": 1000, "x2": 750, "y2": 250}],
    )
    boxes = page.locator("#box-test ~ .bbox")
    expect(boxes).to_have_count(2)
    expect(boxes.nth(0)).to_contain_text("quarter")
    for width in (400, 200):
        page.evaluate(f"document.querySelector('#box-test').style.width = '{width}px'")
        img = _rect(page, "document.querySelector('#box-test')")
        assert img["w"] == pytest.approx(width, abs=1) and img["h"] == pytest.approx(width * 120 / 160, abs=1)
        quarter = _rect(page, "document.querySelectorAll('#box-test ~ .bbox')[0]")
        assert quarter["x"] == pytest.approx(img["x"], abs=1) and quarter["y"] == pytest.approx(img["y"], abs=1)
        assert quarter["w"] == pytest.approx(img["w"] / 2, abs=1) and quarter["h"] == pytest.approx(img["h"] / 2, abs=1)
        other = _rect(page, "document.querySelectorAll('#box-test ~ .bbox')[1]")  # corners given in reverse
        assert other["x"] == pytest.approx(img["x"] + img["w"] * 0.75, abs=1)
        assert other["y"] == pytest.approx(img["y"] + img["h"] * 0.25, abs=1)
        assert other["w"] == pytest.approx(img["w"] / 4, abs=1) and other["h"] == pytest.approx(img["h"] * 0.75, abs=1)
    page.evaluate("document.querySelector('#box-test').parentElement.remove()")

    # the page's own path: an answer with boxes is drawn over the conversation's latest image
    page.fill("#max-tokens", "8")
    page.fill("#prompt", "Where is the disc?")
    page.click("#send")
    answer = _wait_answer(page, 0)
    message = page.locator("#messages .msg.assistant").nth(0)
    sent_image = page.locator("#messages .msg.user img").nth(0).get_attribute("src")
    ground = "([a, text]) => { a.textContent = text; return window.renderGrounding(a); }"
    drawn = page.evaluate(ground, [answer.element_handle(), BOXES_JSON])
    assert drawn == 2
    expect(message.locator("figure.grounding")).to_be_visible()
    expect(message.locator(".bbox")).to_have_count(2)
    assert message.locator("figure.grounding img").get_attribute("src") == sent_image
    labels = message.locator(".bbox-label")
    expect(labels.nth(1)).to_have_text("<b>dog</b>")  # model text as text, never as HTML
    expect(message.locator(".bbox-label b")).to_have_count(0)
    img = _rect(page, "document.querySelector('#messages .msg.assistant figure.grounding img')")
    cat = _rect(page, "document.querySelector('#messages .msg.assistant .bbox')")
    assert img["w"] > 50
    assert cat["x"] == pytest.approx(img["x"] + 0.1 * img["w"], abs=1) and cat["w"] == pytest.approx(0.3 * img["w"], abs=1)
    assert cat["y"] == pytest.approx(img["y"] + 0.15 * img["h"], abs=1) and cat["h"] == pytest.approx(0.45 * img["h"], abs=1)
    # drawn again, the boxes are replaced, not added
    page.evaluate(ground, [answer.element_handle(), BOXES_TOKENS])
    expect(message.locator(".bbox")).to_have_count(2)
    expect(message.locator(".bbox-label")).to_have_count(1)
    assert tab.errors == []


BOX_SCHEMA = {
    "type": "object",
    "properties": {
        "bbox_2d": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 1000}, "minItems": 4, "maxItems": 4},
        "label": {"enum": ["cat", "dog"]},
    },
    "required": ["bbox_2d", "label"],
    "additionalProperties": False,
}


def test_json_option_sends_the_schema_pretty_prints_and_draws_the_boxes(tab, tmp_path):
    """The JSON option: a schema for a grounding box; the tiny random model's answer is held to it,
    shown pretty-printed, and its box drawn over the picture. A schema that is not JSON is refused
    in the page (no request); without a schema the page asks for any JSON object."""
    page = tab.page
    expect = _expect()
    _open(tab)
    expect(page.locator("#schema-field")).to_be_hidden()
    page.check("#json-mode")
    expect(page.locator("#schema-field")).to_be_visible()
    page.fill("#json-schema", "{not json")
    page.fill("#prompt", "Where is the cat?")
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("not valid JSON")
    expect(page.locator("#json-schema")).to_have_class(re.compile("invalid"))
    assert tab.requests == [] and page.locator("#messages .msg").count() == 0

    page.fill("#json-schema", json.dumps(BOX_SCHEMA))
    page.set_input_files("#file", str(_picture(tmp_path, "cat.png", 96, 128, seed=5)))
    page.fill("#max-tokens", "64")
    page.click("#send")
    answer = _wait_answer(page, 0)
    (body,) = tab.requests
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "page_schema", "schema": BOX_SCHEMA, "strict": True}}
    shown = answer.text_content()
    value = json.loads(shown)
    assert shown == json.dumps(value, indent=2, ensure_ascii=False)  # pretty-printed
    assert sorted(value) == ["bbox_2d", "label"] and len(value["bbox_2d"]) == 4 and value["label"] in ("cat", "dog")
    message = page.locator("#messages .msg.assistant").nth(0)
    expect(message.locator(".bbox")).to_have_count(1)
    expect(message.locator(".bbox-label")).to_have_text(value["label"])

    page.fill("#json-schema", "")
    page.fill("#max-tokens", "8")
    page.fill("#prompt", "Anything.")
    page.click("#send")
    _wait_answer(page, 1)
    assert tab.requests[1]["response_format"] == {"type": "json_object"}
    page.uncheck("#json-mode")
    page.fill("#prompt", "Free text.")
    page.click("#send")
    _wait_answer(page, 2)
    assert "response_format" not in tab.requests[2]
    assert tab.errors == []


SSE_PIECES = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"reasoning_content": "Hmm, <think>ing…"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "Grüße 🙂\n<i>line two</i>"}, "finish_reason": None}]},
    {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}},
]


def test_event_stream_reader_takes_any_chunking(tab):
    """The page's SSE reader, fed one byte at a time (lines, \\r\\n and UTF-8 split anywhere, a comment line)."""
    page = tab.page
    _open(tab)
    stream = "".join(f"data: {json.dumps(c, ensure_ascii=False)}\r\n\r\n" for c in SSE_PIECES) + ": keep-alive\n\ndata: [DONE]\n\n"
    received = page.evaluate(
        """async (text) => {
            const bytes = new TextEncoder().encode(text);
            let i = 0;
            const body = new ReadableStream({ pull(c) { if (i < bytes.length) c.enqueue(bytes.slice(i, ++i)); else c.close(); } });
            const out = [];
            await readEventStream(body, (d) => { out.push(d); return d !== '[DONE]'; });
            return out;
        }""",
        stream,
    )
    assert [json.loads(d) for d in received[:-1]] == SSE_PIECES and received[-1] == "[DONE]"
    assert tab.errors == []


@pytest.fixture(scope="module")
def long_server(exported, tmp_path_factory):
    """The tiny export with a 65536-token context: a forced 60000-token answer streams for many
    seconds, so that Stop lands in the middle of it on any machine."""
    from genai_qwen3vl.testing.server import ServerProcess

    from .conftest import PRESET

    with ServerProcess(exported(PRESET), "--max-model-len", str(LONG_CONTEXT), log_dir=tmp_path_factory.mktemp("long_logs")) as server:
        yield server


LONG_CONTEXT = 65536


def test_reasoning_errors_and_stop_against_real_servers(tab, scripted_server, long_server):
    """Reasoning from the scripted checkpoint (its answer: reasoning, </think>, a tool call), the
    served model's real 400 for a request over its context, and Stop on a long real answer."""
    page, expect = tab.page, _expect()
    page.goto(f"{scripted_server.base_url}/")
    expect(page.locator("#model-name")).to_have_attribute("data-state", "ok")
    page.fill("#prompt", "What is the weather in Paris?")
    page.click("#send")
    answer = _wait_answer(page, 0)
    message = page.locator("#messages .msg.assistant").nth(0)
    reasoning = message.locator("details.reasoning")
    expect(reasoning).to_be_visible()
    assert reasoning.get_attribute("open") is None  # folded
    expect(reasoning.locator(".reasoning-text")).to_have_text(SCRIPTED_REASONING)
    assert answer.text_content() == "<tool_call>" + SCRIPTED_TOOL_JSON + "</tool_call>"  # no tools sent: the call is text
    expect(answer.locator("tool_call")).to_have_count(0)  # model text as text, never as HTML
    expect(message.locator(".usage")).to_contain_text(USAGE_LINE)

    served = long_server
    page.goto(f"{served.base_url}/")
    expect(page.locator("#model-name")).to_have_attribute("data-state", "ok")
    # the server's own 400 (over the context): its message in the conversation, the prompt given back
    page.fill("#max-tokens", "100000000")
    page.fill("#prompt", "a question too long to answer")
    page.click("#send")
    _wait_answer(page, 0)
    expect(page.locator("#messages .msg.assistant").nth(0).locator(".error")).to_contain_text("context")
    expect(page.locator("#prompt")).to_have_value("a question too long to answer")

    # Stop during a long answer: the page stops, and the server frees the slot. The request goes to
    # the real server with vLLM's min_tokens added, so that the random model cannot end it early.
    def long_answer(route):
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "min_tokens": body["max_tokens"]}))

    page.route("**/v1/chat/completions", long_answer)
    page.fill("#max-tokens", str(LONG_CONTEXT - 1000))
    page.fill("#prompt", "Write a poem.")
    page.click("#send")
    # the answer has begun: the server runs it and the page holds some of its text (raw text, not
    # Playwright's whitespace-normalized one; the first tokens of a random model on a loaded
    # 2-core machine may take longer than expect's 5 s)
    page.wait_for_function(
        "() => { const m = document.querySelectorAll('#messages .msg.assistant')[1];"
        " return !!m && (m.querySelector('.answer').textContent + m.querySelector('.reasoning-text').textContent).length > 0; }",
        timeout=120_000,
    )
    expect(page.locator("#stop")).to_be_enabled()
    # a click event on the button itself: Playwright's click first waits for the element to hold
    # still while scrolling it into view, which a page following a fast stream may not grant
    page.locator("#stop").dispatch_event("click")
    page.unroute("**/v1/chat/completions")
    _wait_answer(page, 1)
    expect(page.locator("#messages .msg.assistant .usage").nth(1)).to_contain_text("stopped")
    health = f"{served.base_url}/health"
    for _ in range(100):
        with urllib.request.urlopen(health, timeout=10) as r:
            if json.load(r)["running"] == 0:
                break
    else:
        pytest.fail("the stopped generation still holds its slot")

    # the next request carries the answered turns only, and New chat starts afresh
    page.fill("#max-tokens", "4")
    page.fill("#prompt", "last")
    page.click("#send")
    _wait_answer(page, 2)
    roles = [m["role"] for m in tab.requests[-1]["messages"]]
    assert roles == ["user", "assistant", "user"], roles
    page.click("#new-chat")
    expect(page.locator("#messages .msg")).to_have_count(0)
    page.fill("#prompt", "fresh")
    page.click("#send")
    _wait_answer(page, 0)
    assert tab.requests[-1]["messages"] == [{"role": "user", "content": "fresh"}]
    # the 400 is logged by the browser itself as a failed load; the page's own code raised nothing
    assert [e for e in tab.errors if not e.startswith("console.error: Failed to load resource")] == []
