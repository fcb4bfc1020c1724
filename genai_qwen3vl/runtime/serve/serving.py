"""Chat serving: one admitted request's job turned into OpenAI's answer, whole or streamed.

    Job events --> Answer (stop strings, reasoning, tool calls: output.py) --> ChatCompletion
                                                                        \\--> ChatCompletionChunk
                                                                              server-sent events

One ChatServing per admitted request.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator

from .engine import Prepared
from .errors import APIError
from .metrics import Metrics
from .output import OutputSplitter, StopFilter
from .protocol import ChatRequest
from .scheduler import Failed, Finished, Job, Outcome, TokenText

GRAMMAR_ERROR = "Error creating grammar:"  # og 0.18's words when llguidance refuses a constraint


class Answer:
    """Turns the token stream of one job into OpenAI's message or chunks."""

    def __init__(self, request: ChatRequest, prepared: Prepared):
        self.stop = StopFilter(request.sampling.stop)
        self.split = OutputSplitter(prepared.opened_think, request.parse_tools, request.tools)
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[dict] = []
        self.tokens: list[int] = []
        self.outcome: Outcome | None = None

    def feed(self, token: int, text: str) -> list[tuple[str, Any]]:
        if self.stop.stopped:  # tokens the worker made before it saw the stop are not the answer's
            return []
        self.tokens.append(token)
        return self._keep(self.split.feed(self.stop.feed(text)))

    def finish(self, outcome: Outcome, tail: str) -> list[tuple[str, Any]]:
        """``tail``: text the detokenizer held until the end (an incomplete character)."""
        self.outcome = outcome
        events = [] if self.stop.stopped else self.split.feed(self.stop.feed(tail))
        return self._keep(events + self.split.feed(self.stop.finish()) + self.split.finish())

    def _keep(self, events):
        out = []
        for kind, value in events:
            if kind == "tool_call":
                value = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": value}
                self.calls.append(value)
            (self.content if kind == "content" else self.reasoning if kind == "reasoning" else []).append(value)
            out.append((kind, value))
        return out

    @property
    def finish_reason(self) -> str:
        reason = "stop" if self.stop.stopped else self.outcome.finish
        return "tool_calls" if self.calls and reason == "stop" else reason

    def usage(self, prompt_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": len(self.tokens), "total_tokens": prompt_tokens + len(self.tokens)}

    def message(self) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) if self.content or not self.calls else None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = self.calls
        return message


def delta_of(kind: str, value: Any, call_index: int) -> dict:
    if kind == "content":
        return {"content": value}
    if kind == "reasoning":
        return {"reasoning_content": value}
    return {"tool_calls": [{"index": call_index, **value}]}


def record(metrics: Metrics, prepared: Prepared, answer: Answer) -> None:
    outcome = answer.outcome
    metrics.record_generation(
        len(prepared.prompt_ids),
        len(answer.tokens),
        answer.finish_reason,
        outcome.first_token_s if outcome else None,
        outcome.decode_s if outcome else 0.0,
    )


async def answer_events(job: Job, answer: Answer, deadline: float) -> AsyncIterator[tuple[int | None, list]]:
    """Runs a job to its end: per token (token, events), then (None, the closing events). A stop
    string ends the generation at the next token; APIError 408 past the deadline, 500 if og failed."""
    while True:
        try:
            item = await job.next(deadline)
        except TimeoutError:
            raise APIError(408, "the request ran past --timeout and was stopped", type="timeout_error", code="timeout") from None
        if isinstance(item, TokenText):
            yield item.token, answer.feed(item.token, item.text)
            if answer.stop.stopped:
                job.stop()
        elif isinstance(item, Finished):
            yield None, answer.finish(item.outcome, item.tail)
            return
        else:
            assert isinstance(item, Failed)
            if GRAMMAR_ERROR in item.message:  # what the checks before the queue passed and og's llguidance refused
                detail = item.message.split(GRAMMAR_ERROR, 1)[1].strip().splitlines()[0][:300]
                raise APIError(400, f"onnxruntime-genai cannot use the constraint: {detail}", code="invalid_constraint")
            raise APIError(500, "generation failed (RuntimeError); the server log has the details", type="server_error")


class ChatServing:
    """The answers to one admitted request (``job``): ``complete()`` the whole ChatCompletion,
    ``stream()`` its server-sent events."""

    def __init__(self, job: Job, chat: ChatRequest, prepared: Prepared, model: str, deadline: float, metrics: Metrics):
        self.job, self.chat, self.prepared, self.model, self.deadline, self.metrics = job, chat, prepared, model, deadline, metrics
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    async def complete(self) -> dict:
        """The ChatCompletion; the caller abandons the job when it is cancelled (a disconnect)."""
        answer = Answer(self.chat, self.prepared)
        async for _ in answer_events(self.job, answer, self.deadline):
            pass
        record(self.metrics, self.prepared, answer)
        choice = {"index": 0, "message": answer.message(), "logprobs": None, "finish_reason": answer.finish_reason}
        result = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": answer.usage(len(self.prepared.prompt_ids)),
        }
        if self.chat.return_token_ids:
            choice["token_ids"] = answer.tokens
            result["prompt_token_ids"] = self.prepared.prompt_ids
        return result

    def _chunk(self, delta: dict, finish: str | None = None, token_ids: list[int] | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if token_ids is not None:
            choice["token_ids"] = token_ids
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            **extra,
        }
        if self.chat.include_usage:
            payload["usage"] = None
        return sse(payload)

    def _chunks(self, answer: Answer, events, token_ids: list[int] | None) -> list[str]:
        out = []
        index = len(answer.calls) - sum(kind == "tool_call" for kind, _ in events)  # of this batch's first call
        for kind, value in events:
            out.append(self._chunk(delta_of(kind, value, index), token_ids=token_ids))
            index += kind == "tool_call"
            token_ids = [] if token_ids is not None else None
        if token_ids:  # a token whose text is held back still reports its id
            out.append(self._chunk({}, token_ids=token_ids))
        return out

    async def stream(self) -> AsyncIterator[str]:
        """Server-sent events as OpenAI streams them; a client that goes away cancels the job (the
        response is closed, ``finally`` runs) and frees its slot within one token."""
        chat, answer = self.chat, Answer(self.chat, self.prepared)
        try:
            first = {"role": "assistant", "content": ""}
            if chat.return_token_ids:
                yield self._chunk(first, token_ids=[], prompt_token_ids=self.prepared.prompt_ids)
            else:
                yield self._chunk(first)
            try:
                async for token, events in answer_events(self.job, answer, self.deadline):
                    for text in self._chunks(answer, events, [token] if chat.return_token_ids and token is not None else None):
                        yield text
            except APIError as error:  # past the deadline, or og failed: an error event ends the stream
                yield sse(error.body())
                yield "data: [DONE]\n\n"
                return
            record(self.metrics, self.prepared, answer)
            yield self._chunk({}, answer.finish_reason)
            if chat.include_usage:
                yield sse(
                    {
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": answer.usage(len(self.prepared.prompt_ids)),
                    }
                )
            yield "data: [DONE]\n\n"
        finally:
            self.job.abandon()


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
