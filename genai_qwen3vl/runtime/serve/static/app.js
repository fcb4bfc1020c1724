// The chat page of `genai-qwen3vl serve`: plain JavaScript, no framework, no build step.
// It talks to the OpenAI-compatible API of the same server (/v1/models, /v1/chat/completions).
// Model output is only ever written with textContent, never as HTML.
"use strict";

// ---------------------------------------------------------------------------------------------
// Grounding boxes (Qwen3-VL): parse them from an answer and draw them over an image.
// Both are globals: window.parseBoxes(text) and window.drawBoxes(img, boxes).
// ---------------------------------------------------------------------------------------------

const BOX_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

// Index of the bracket that closes the one at text[start] ("{" or "["), skipping JSON strings;
// -1 when it is not closed (a truncated answer) or closed by the wrong kind.
function matchingBracket(text, start) {
  const stack = [];
  let inString = false;
  let escaped = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (c === "\\") escaped = true;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === "{" || c === "[") {
      stack.push(c === "{" ? "}" : "]");
    } else if (c === "}" || c === "]") {
      if (stack.pop() !== c) return -1;
      if (stack.length === 0) return i;
    }
  }
  return -1;
}

// Every object with a "bbox_2d": [x1, y1, x2, y2] inside a parsed JSON value.
function collectJsonBoxes(value, position, out) {
  if (Array.isArray(value)) {
    for (const item of value) collectJsonBoxes(item, position, out);
  } else if (value !== null && typeof value === "object") {
    const b = value.bbox_2d;
    if (Array.isArray(b) && b.length === 4 && b.every((n) => n !== null && n !== "" && Number.isFinite(Number(n)))) {
      const label = value.label === undefined || value.label === null ? "" : String(value.label);
      out.push({ position, box: { label, x1: Number(b[0]), y1: Number(b[1]), x2: Number(b[2]), y2: Number(b[3]) } });
    } else {
      for (const item of Object.values(value)) collectJsonBoxes(item, position, out);
    }
  }
}

const NUM = "(-?\\d+(?:\\.\\d+)?)";
const TOKEN_BOX = new RegExp(
  "(?:<\\|object_ref_start\\|>([^<]*)<\\|object_ref_end\\|>\\s*)?" +
    "<\\|box_start\\|>\\s*\\(\\s*" + NUM + "\\s*,\\s*" + NUM + "\\s*\\)\\s*,?\\s*\\(\\s*" + NUM + "\\s*,\\s*" + NUM + "\\s*\\)\\s*<\\|box_end\\|>",
  "g",
);

/**
 * The grounding boxes in a model answer, in the order they appear: [{label, x1, y1, x2, y2}],
 * coordinates as the model wrote them (Qwen3-VL: 0-1000, relative to the image).
 * Understands JSON (bare or in ```json fences; one object or a list; objects with "bbox_2d" and
 * an optional "label"; complete objects of a truncated list too) and the special-token form
 * <|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>.
 */
function parseBoxes(text) {
  if (typeof text !== "string" || !text) return [];
  const found = [];
  if (text.includes("bbox_2d")) {
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === "{" || c === "[") {
        const end = matchingBracket(text, i);
        if (end > 0) {
          let value;
          let parsed = false;
          try {
            value = JSON.parse(text.slice(i, end + 1));
            parsed = true;
          } catch (e) {
            // not JSON from here: look inside it (a malformed list may hold well-formed objects)
          }
          if (parsed) {
            collectJsonBoxes(value, i, found);
            i = end + 1;
            continue;
          }
        }
      }
      i++;
    }
  }
  if (text.includes("<|box_start|>")) {
    for (const m of text.matchAll(TOKEN_BOX)) {
      const label = m[1] === undefined ? "" : m[1].trim();
      found.push({ position: m.index, box: { label, x1: Number(m[2]), y1: Number(m[3]), x2: Number(m[4]), y2: Number(m[5]) } });
    }
  }
  found.sort((a, b) => a.position - b.position);
  return found.map((f) => f.box);
}

function clamp1000(v) {
  return Math.min(1000, Math.max(0, v));
}

/**
 * Draws boxes (0-1000 coordinates) over an <img>: wraps it in a span.bbox-wrap (once) and adds one
 * div.bbox per box, positioned in percent, so the boxes follow the displayed size of the image.
 * Replaces boxes drawn before on the same image. Returns the wrapper.
 */
function drawBoxes(img, boxes) {
  let wrap = img.parentElement;
  if (!wrap || !wrap.classList.contains("bbox-wrap")) {
    wrap = document.createElement("span");
    wrap.className = "bbox-wrap";
    if (img.parentNode) img.parentNode.insertBefore(wrap, img);
    wrap.appendChild(img);
  }
  for (const old of wrap.querySelectorAll(".bbox")) old.remove();
  (boxes || []).forEach((b, n) => {
    const x1 = clamp1000(Math.min(b.x1, b.x2));
    const x2 = clamp1000(Math.max(b.x1, b.x2));
    const y1 = clamp1000(Math.min(b.y1, b.y2));
    const y2 = clamp1000(Math.max(b.y1, b.y2));
    const div = document.createElement("div");
    div.className = "bbox";
    div.style.left = `${x1 / 10}%`;
    div.style.top = `${y1 / 10}%`;
    div.style.width = `${(x2 - x1) / 10}%`;
    div.style.height = `${(y2 - y1) / 10}%`;
    div.style.setProperty("--box-color", BOX_COLORS[n % BOX_COLORS.length]);
    const label = b.label ? String(b.label) : "";
    div.title = `${label ? label + " " : ""}[${b.x1}, ${b.y1}, ${b.x2}, ${b.y2}]`;
    if (label) {
      const span = document.createElement("span");
      span.className = "bbox-label";
      span.textContent = label;
      div.appendChild(span);
    }
    wrap.appendChild(div);
  });
  return wrap;
}

window.parseBoxes = parseBoxes;
window.drawBoxes = drawBoxes;

// ---------------------------------------------------------------------------------------------
// Server-sent events: "data: ..." lines, events ended by a blank line, lines split anywhere
// across network chunks. Calls onData(dataString) per event; stops when it returns false.
// ---------------------------------------------------------------------------------------------

async function readEventStream(body, onData) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  let stopped = false;

  const dispatch = () => {
    if (data.length === 0) return;
    const payload = data.join("\n");
    data = [];
    if (onData(payload) === false) stopped = true;
  };
  const line = (text) => {
    if (text.endsWith("\r")) text = text.slice(0, -1);
    if (text === "") return dispatch();
    if (text.startsWith(":")) return undefined; // a comment (keep-alive)
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    if (field !== "data") return undefined; // event:, id:, retry: are not used here
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    data.push(value);
    // servers that forget the blank line between events: a complete event on one line goes now
    if (data.length === 1 && (value === "[DONE]" || isJson(value))) dispatch();
    return undefined;
  };

  try {
    while (!stopped) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while (!stopped && (nl = buffer.indexOf("\n")) >= 0) {
        const text = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        line(text);
      }
    }
    if (!stopped) {
      buffer += decoder.decode();
      if (buffer) line(buffer);
      if (!stopped) dispatch();
    }
  } finally {
    if (stopped) reader.cancel().catch(() => {});
  }
}

function isJson(text) {
  try {
    JSON.parse(text);
    return true;
  } catch (e) {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// The page
// ---------------------------------------------------------------------------------------------

(function chatPage() {
  const KEY_STORAGE = "genai-qwen3vl.api-key";
  const $ = (selector) => document.querySelector(selector);
  const ui = {
    body: document.body,
    modelName: $("#model-name"),
    apiKey: $("#api-key"),
    newChat: $("#new-chat"),
    system: $("#system"),
    maxTokens: $("#max-tokens"),
    temperature: $("#temperature"),
    jsonMode: $("#json-mode"),
    schemaField: $("#schema-field"),
    jsonSchema: $("#json-schema"),
    messages: $("#messages"),
    status: $("#status"),
    attachments: $("#attachments"),
    file: $("#file"),
    prompt: $("#prompt"),
    send: $("#send"),
    stop: $("#stop"),
  };

  const state = {
    model: null, // id from /v1/models
    modelsKey: null, // the API key /v1/models was last asked with
    history: [], // OpenAI messages of the conversation so far (no system prompt)
    attachments: [], // [{id, url, name}] waiting in the composer
    nextId: 1,
    busy: false,
    controller: null, // AbortController of the request in flight
    chat: 0, // which conversation: "New chat" counts up, so a request it abandoned leaves the new one alone
  };

  // -- helpers ---------------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    const key = ui.apiKey.value.trim();
    if (key) h.Authorization = `Bearer ${key}`;
    return h;
  }

  let statusTimer = null;
  function setStatus(text, sticky) {
    ui.status.textContent = text || "";
    clearTimeout(statusTimer);
    if (text && !sticky) statusTimer = setTimeout(() => (ui.status.textContent = ""), 6000);
  }

  // The message of an error answer: {"error": {"message", "type", "param", "code"}} or anything else.
  async function errorMessage(response) {
    const text = await response.text().catch(() => "");
    let message = "";
    try {
      const body = JSON.parse(text);
      const err = body && body.error;
      if (err && typeof err === "object") message = err.message || err.type || JSON.stringify(err);
      else if (typeof err === "string") message = err;
      else if (body && body.detail) message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (e) {
      message = text.trim().slice(0, 500);
    }
    return `${response.status} ${response.statusText || ""}`.trim() + (message ? `: ${message}` : "");
  }

  const nearBottom = () => ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 80;
  const scrollDown = () => (ui.messages.scrollTop = ui.messages.scrollHeight);

  // -- the model and the API key ---------------------------------------------------------------

  async function loadModels() {
    const key = ui.apiKey.value.trim();
    state.modelsKey = key;
    ui.modelName.dataset.state = "loading";
    ui.modelName.textContent = "loading model…";
    let response;
    try {
      response = await fetch("/v1/models", { headers: headers(false) });
    } catch (e) {
      state.model = null;
      ui.modelName.dataset.state = "error";
      ui.modelName.textContent = "server unreachable";
      setStatus(`Cannot reach the server: ${e.message}`, true);
      return;
    }
    if (response.status === 401) {
      state.model = null;
      ui.modelName.dataset.state = "auth";
      ui.modelName.textContent = "API key needed";
      setStatus(key ? "The server refused this API key: enter the right one above." : "This server needs an API key: enter it above.", true);
      ui.apiKey.classList.add("needed");
      return;
    }
    if (!response.ok) {
      state.model = null;
      ui.modelName.dataset.state = "error";
      ui.modelName.textContent = "no model";
      setStatus(`/v1/models: ${await errorMessage(response)}`, true);
      return;
    }
    try {
      const body = await response.json();
      state.model = body.data[0].id;
    } catch (e) {
      state.model = null;
      ui.modelName.dataset.state = "error";
      ui.modelName.textContent = "no model";
      setStatus("/v1/models answered without a model id", true);
      return;
    }
    ui.apiKey.classList.remove("needed");
    ui.modelName.dataset.state = "ok";
    ui.modelName.textContent = state.model;
    ui.modelName.title = `model: ${state.model}`;
    setStatus("");
  }

  function keyChanged() {
    const key = ui.apiKey.value.trim();
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch (e) {
      // storage may be disabled; the key still works for this page
    }
    if (key !== state.modelsKey) loadModels();
  }

  // -- attachments -----------------------------------------------------------------------------

  function readAsDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error || new Error("cannot read the file"));
      reader.readAsDataURL(file);
    });
  }

  async function addFiles(files) {
    const skipped = [];
    for (const file of Array.from(files || [])) {
      if (!file.type || !file.type.startsWith("image/")) {
        skipped.push(file.name || "(unnamed)");
        continue;
      }
      try {
        const url = await readAsDataUrl(file);
        state.attachments.push({ id: state.nextId++, url, name: file.name || "pasted image" });
      } catch (e) {
        skipped.push(file.name || "(unnamed)");
      }
    }
    renderAttachments();
    if (skipped.length) setStatus(`Not attached (not an image): ${skipped.join(", ")}`);
  }

  function renderAttachments() {
    ui.attachments.replaceChildren();
    for (const a of state.attachments) {
      const thumb = el("div", "thumb");
      const img = el("img");
      img.src = a.url;
      img.alt = a.name;
      img.title = a.name;
      const remove = el("button", "remove", "×");
      remove.type = "button";
      remove.title = `Remove ${a.name}`;
      remove.setAttribute("aria-label", `Remove ${a.name}`);
      remove.addEventListener("click", () => {
        state.attachments = state.attachments.filter((x) => x.id !== a.id);
        renderAttachments();
      });
      thumb.append(img, remove);
      ui.attachments.appendChild(thumb);
    }
    ui.attachments.hidden = state.attachments.length === 0;
  }

  // -- the conversation ------------------------------------------------------------------------

  function imagesOf(message) {
    if (!Array.isArray(message.content)) return [];
    return message.content.filter((p) => p.type === "image_url").map((p) => p.image_url.url);
  }

  function latestImage(messages) {
    for (let i = messages.length - 1; i >= 0; i--) {
      const images = imagesOf(messages[i]);
      if (images.length) return images[images.length - 1];
    }
    return null;
  }

  function clearHint() {
    const hint = ui.messages.querySelector(".empty-hint");
    if (hint) hint.remove();
  }

  function addUserMessage(text, images) {
    clearHint();
    const node = el("div", "msg user");
    node.appendChild(el("div", "role", "you"));
    if (images.length) {
      const row = el("div", "msg-images");
      for (const url of images) {
        const img = el("img");
        img.src = url;
        img.alt = "attached image";
        row.appendChild(img);
      }
      node.appendChild(row);
    }
    if (text) node.appendChild(el("div", "msg-text", text));
    ui.messages.appendChild(node);
    return node;
  }

  function addAssistantMessage() {
    const node = el("div", "msg assistant");
    node.appendChild(el("div", "role", state.model || "model"));
    const reasoning = el("details", "reasoning");
    reasoning.hidden = true;
    reasoning.appendChild(el("summary", "", "Thinking"));
    const reasoningText = el("div", "reasoning-text");
    reasoning.appendChild(reasoningText);
    const answer = el("div", "answer streaming");
    answer.dataset.done = "0";
    const answerText = document.createTextNode("");
    answer.appendChild(answerText);
    const tools = el("pre", "tool-calls");
    tools.hidden = true;
    const toolsCode = el("code");
    tools.appendChild(toolsCode);
    const grounding = el("figure", "grounding");
    grounding.hidden = true;
    const error = el("div", "error");
    error.hidden = true;
    error.setAttribute("role", "alert");
    const usage = el("div", "usage");
    node.append(reasoning, answer, tools, grounding, error, usage);
    ui.messages.appendChild(node);
    return { node, reasoning, reasoningText, answer, answerText, tools, toolsCode, grounding, error, usage };
  }

  // Draws the boxes of an answer over the most recent image of the conversation, in the answer's
  // message. Returns how many boxes were drawn. Global as window.renderGrounding(answerElement).
  function renderGrounding(answerElement) {
    const node = answerElement.closest(".msg");
    const figure = node && node.querySelector("figure.grounding");
    if (!figure) return 0;
    const boxes = parseBoxes(answerElement.textContent);
    const url = node.imageUrl || latestImage(state.history);
    if (!boxes.length || !url) {
      figure.hidden = true;
      figure.replaceChildren();
      return 0;
    }
    let img = figure.querySelector("img");
    if (!img) {
      img = el("img");
      img.alt = "grounding boxes on the latest image";
      figure.appendChild(img);
      const caption = el("figcaption");
      figure.appendChild(caption);
    }
    if (img.getAttribute("src") !== url) img.src = url;
    drawBoxes(img, boxes);
    figure.querySelector("figcaption").textContent = `${boxes.length} box${boxes.length === 1 ? "" : "es"}: ${boxes
      .map((b) => b.label || "?")
      .join(", ")}`;
    figure.hidden = false;
    return boxes.length;
  }
  window.renderGrounding = renderGrounding;

  function setBusy(busy) {
    state.busy = busy;
    ui.body.dataset.busy = busy ? "1" : "0";
    ui.send.disabled = busy;
    ui.stop.disabled = !busy;
  }

  // The JSON option: null (off), {type: "json_object"} (no schema), or OpenAI's json_schema
  // format; throws a SyntaxError naming the problem when the schema box holds no JSON.
  function responseFormat() {
    if (!ui.jsonMode.checked) return null;
    const text = ui.jsonSchema.value.trim();
    if (!text) return { type: "json_object" };
    let schema;
    try {
      schema = JSON.parse(text);
    } catch (e) {
      throw new SyntaxError(`the JSON schema is not valid JSON: ${e.message}`);
    }
    return { type: "json_schema", json_schema: { name: "page_schema", schema, strict: true } };
  }

  function requestBody(messages, format) {
    const body = { model: state.model || "default", messages, stream: true, stream_options: { include_usage: true } };
    const maxTokens = parseInt(ui.maxTokens.value, 10);
    if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
    const temperature = ui.temperature.value.trim();
    if (temperature !== "" && Number.isFinite(Number(temperature))) body.temperature = Number(temperature);
    if (format) body.response_format = format;
    return body;
  }

  // A JSON answer shown pretty-printed (two-space indent); the conversation keeps it as written.
  function prettyJson(view, answer) {
    let value;
    try {
      value = JSON.parse(answer);
    } catch (e) {
      return;
    }
    view.answerText.data = JSON.stringify(value, null, 2);
    view.answer.classList.add("json");
  }

  async function send() {
    if (state.busy) return;
    const text = ui.prompt.value.trim();
    const images = state.attachments.map((a) => a.url);
    if (!text && !images.length) {
      ui.prompt.focus();
      return;
    }
    let format;
    try {
      format = responseFormat();
      ui.jsonSchema.classList.remove("invalid");
    } catch (e) {
      ui.jsonSchema.classList.add("invalid");
      setStatus(e.message);
      ui.jsonSchema.focus();
      return;
    }
    setBusy(true);
    if (!state.model) await loadModels();
    const chat = state.chat;

    const content = images.length
      ? [...images.map((url) => ({ type: "image_url", image_url: { url } })), ...(text ? [{ type: "text", text }] : [])]
      : text;
    const userMessage = { role: "user", content };
    const restore = { text: ui.prompt.value, attachments: state.attachments };
    ui.prompt.value = "";
    autosize();
    state.attachments = [];
    renderAttachments();

    const userNode = addUserMessage(text, images);
    state.history.push(userMessage);
    const messages = [];
    const system = ui.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...state.history);

    const view = addAssistantMessage();
    view.node.imageUrl = latestImage(state.history);
    scrollDown();

    const controller = new AbortController();
    state.controller = controller;

    const run = { answer: "", reasoning: "", tools: [], usage: null, finish: null, error: null, start: performance.now(), first: null };
    let lastGrounding = 0;

    const stick = () => nearBottom();
    const appendAnswer = (delta) => {
      const follow = stick();
      run.answer += delta;
      view.answerText.appendData(delta);
      // boxes drawn while streaming too: when an object or a box token may just have closed
      if (/[}>]/.test(delta) && performance.now() - lastGrounding > 300) {
        lastGrounding = performance.now();
        renderGrounding(view.answer);
      }
      if (follow) scrollDown();
    };
    const appendReasoning = (delta) => {
      const follow = stick();
      run.reasoning += delta;
      view.reasoning.hidden = false;
      view.reasoningText.textContent = run.reasoning;
      if (follow) scrollDown();
    };
    const addToolCalls = (calls) => {
      for (const call of calls) {
        const index = Number.isInteger(call.index) ? call.index : run.tools.length;
        const tool = (run.tools[index] = run.tools[index] || { name: "", arguments: "" });
        if (call.function && call.function.name) tool.name += call.function.name;
        if (call.function && call.function.arguments) tool.arguments += call.function.arguments;
      }
      view.tools.hidden = false;
      view.toolsCode.textContent = run.tools
        .filter(Boolean)
        .map((t) => `${t.name}(${t.arguments})`)
        .join("\n");
    };
    const onChunk = (chunk) => {
      if (chunk.error) {
        const err = chunk.error;
        run.error = typeof err === "string" ? err : err.message || JSON.stringify(err);
        return;
      }
      if (chunk.usage) run.usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) return;
      const delta = choice.delta || choice.message || {};
      const reasoning = delta.reasoning_content || delta.reasoning;
      if ((delta.content || reasoning) && run.first === null) run.first = performance.now();
      if (reasoning) appendReasoning(reasoning);
      if (delta.content) appendAnswer(delta.content);
      if (Array.isArray(delta.tool_calls) && delta.tool_calls.length) addToolCalls(delta.tool_calls);
      if (choice.finish_reason) run.finish = choice.finish_reason;
    };

    let aborted = false;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers(true),
        body: JSON.stringify(requestBody(messages, format)),
        signal: controller.signal,
      });
      if (!response.ok) {
        run.error = await errorMessage(response);
        if (response.status === 401) {
          ui.apiKey.classList.add("needed");
          setStatus("This server needs an API key: enter it above.", true);
        }
      } else if ((response.headers.get("Content-Type") || "").includes("application/json")) {
        onChunk(await response.json()); // a server that did not stream
      } else {
        await readEventStream(response.body, (data) => {
          if (data === "[DONE]") return false;
          let chunk;
          try {
            chunk = JSON.parse(data);
          } catch (e) {
            console.warn("unreadable event from the server:", data);
            return true;
          }
          onChunk(chunk);
          return !chunk.error;
        });
      }
    } catch (e) {
      if (e.name === "AbortError") aborted = true;
      else run.error = `request failed: ${e.message}`;
    }
    const end = performance.now();
    const follow = nearBottom();

    // the conversation keeps what was answered; a turn that got nothing back is taken out again
    if (chat !== state.chat) {
      // abandoned by "New chat": nothing to keep
    } else if (run.answer) {
      state.history.push({ role: "assistant", content: run.answer });
    } else if (!run.tools.length && (run.error || aborted)) {
      state.history.pop();
      userNode.classList.add("not-sent");
      userNode.querySelector(".role").textContent = "you · not sent";
      if (!ui.prompt.value && !state.attachments.length) {
        ui.prompt.value = restore.text;
        state.attachments = restore.attachments;
        renderAttachments();
        autosize();
      }
    } else {
      state.history.push({ role: "assistant", content: "" });
    }

    if (run.error) {
      view.error.hidden = false;
      view.error.textContent = run.error;
      view.node.classList.add("has-error");
    }
    view.usage.textContent = usageLine(run, end, aborted);
    if (format && run.answer) prettyJson(view, run.answer);
    renderGrounding(view.answer);
    view.answer.classList.remove("streaming");
    if (!run.answer) view.answer.classList.add("empty");
    view.answer.dataset.done = "1";
    view.node.dataset.done = "1";
    if (state.controller === controller) {
      state.controller = null;
      setBusy(false);
    }
    if (follow) scrollDown();
  }

  function usageLine(run, end, aborted) {
    const parts = [];
    const seconds = (end - run.start) / 1000;
    if (run.usage) {
      const prompt = run.usage.prompt_tokens;
      const completion = run.usage.completion_tokens;
      parts.push(`${prompt} prompt + ${completion} completion tokens`);
      // decoding speed: the tokens after the first over the time after the first
      const decodeSeconds = run.first === null ? 0 : (end - run.first) / 1000;
      if (completion > 1 && decodeSeconds > 0) parts.push(`${((completion - 1) / decodeSeconds).toFixed(1)} tokens/s`);
      else if (completion > 0 && seconds > 0) parts.push(`${(completion / seconds).toFixed(1)} tokens/s`);
    } else if (!run.error) {
      parts.push("no usage reported");
    }
    if (run.first !== null) parts.push(`first token ${((run.first - run.start) / 1000).toFixed(2)} s`);
    parts.push(`${seconds.toFixed(2)} s`);
    if (aborted) parts.push("stopped");
    else if (run.finish === "length") parts.push("cut at max tokens");
    else if (run.finish && run.finish !== "stop") parts.push(`finish: ${run.finish}`);
    return parts.join(" · ");
  }

  function stop() {
    if (state.controller) state.controller.abort();
  }

  function newChat() {
    stop();
    state.chat++;
    state.history = [];
    ui.messages.replaceChildren();
    ui.messages.appendChild(el("p", "empty-hint", "New chat. Ask about a picture: paste it, drop it here, or attach it with the paperclip button. Enter sends, Shift+Enter starts a new line."));
    ui.prompt.focus();
  }

  function autosize() {
    ui.prompt.style.height = "auto";
    ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight + 2, 240)}px`;
  }

  // -- wiring ----------------------------------------------------------------------------------

  ui.send.addEventListener("click", send);
  ui.stop.addEventListener("click", stop);
  ui.newChat.addEventListener("click", newChat);
  ui.prompt.addEventListener("input", autosize);
  ui.prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  ui.file.addEventListener("change", async () => {
    await addFiles(ui.file.files);
    ui.file.value = "";
  });
  ui.jsonMode.addEventListener("change", () => {
    ui.schemaField.hidden = !ui.jsonMode.checked;
  });
  ui.jsonSchema.addEventListener("input", () => ui.jsonSchema.classList.remove("invalid"));
  ui.apiKey.addEventListener("change", keyChanged);
  ui.apiKey.addEventListener("keydown", (e) => {
    if (e.key === "Enter") keyChanged();
  });

  document.addEventListener("paste", (e) => {
    const files = Array.from((e.clipboardData && e.clipboardData.files) || []).filter((f) => f.type.startsWith("image/"));
    if (!files.length) return;
    if (!e.clipboardData.types.includes("text/plain")) e.preventDefault();
    addFiles(files);
  });

  let dragDepth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth++;
    ui.body.classList.add("dragging");
  });
  document.addEventListener("dragover", (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) ui.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    ui.body.classList.remove("dragging");
    addFiles(e.dataTransfer.files);
  });

  // settings: always open on wide screens, folded at first on narrow ones
  const narrow = window.matchMedia("(max-width: 640px)");
  const settings = $("#settings");
  settings.open = !narrow.matches;
  narrow.addEventListener("change", () => {
    if (!narrow.matches) settings.open = true;
  });

  try {
    ui.apiKey.value = localStorage.getItem(KEY_STORAGE) || "";
  } catch (e) {
    ui.apiKey.value = "";
  }
  renderAttachments();
  setBusy(false);
  autosize();
  loadModels();
})();
