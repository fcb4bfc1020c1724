"""One exported folder, answering chat requests through stock onnxruntime-genai.

The og model is loaded once, in the generation worker process (``worker.py``: og holds the GIL
while it computes a token); each request gets its own ``og.Generator`` there (og 0.18 cannot put
several multimodal prompts into one generator: its batching Engine is text-only), run one token
at a time, checking between tokens whether the request was cancelled. Input preparation happens
here, exactly as the chat sample does it: the checkpoint's chat template, then
``Qwen3VLProcessor`` (transformers' preprocessing), so the server's greedy tokens are the ones
og's Generator gives for the same messages, which the parity tests compare with transformers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from pathlib import Path

from ...errors import FolderError, ServerError
from ...model.folder import ExportedFolder
from .. import budget
from ..chat_template import TemplateLimitError, TemplateLimits, render_chat_template
from ..constraints import ConstraintChecker, ConstraintError
from ..processor import Qwen3VLProcessor
from ..video import video_decode_pixels
from .errors import APIError, bad_request
from .media import MediaPolicy
from .protocol import ChatRequest, too_long
from .worker import Worker

log = logging.getLogger("genai_qwen3vl.serve")
MM_KEYS = ("min_pixels", "max_pixels", "fps")
MAX_FPS = 60.0
TEMPLATE_SECONDS = 5.0  # a checkpoint's chat template renders in milliseconds; past this it is stopped
TEMPLATE_MIN_CHARS = 1 << 20  # the template may write 4x the request's text, and at least this


@dataclasses.dataclass
class Prepared:
    """A request ready to run: og inputs, search options and what the answer needs."""

    arrays: dict  # the og inputs as numpy arrays (og.NamedTensors are built in the worker)
    prompt_ids: list[int]
    search: dict
    max_tokens: int
    opened_think: bool
    guidance: tuple[str, str] | None = None  # og's structured output, composed after </think> when the prompt opened <think>


class Engine:
    def __init__(
        self, model_dir: Path, max_model_len: int | None, min_pixels: int | None, max_pixels: int | None, threads: int | None = None
    ):
        self.model_dir = Path(model_dir)
        self.threads = threads
        folder = ExportedFolder.open(self.model_dir)
        self.processor = Qwen3VLProcessor(folder)
        if not self.processor.chat_template:
            raise FolderError(
                f"{self.model_dir} has no chat template (chat_template.json/.jinja or tokenizer_config.json); "
                "export it again with builder_qwen3vl.py, which copies the checkpoint's"
            )
        self.limits = (self.processor.image_settings.min_pixels, self.processor.image_settings.max_pixels)
        if min_pixels is not None or max_pixels is not None:
            low, high = self._pixel_limits(min_pixels, max_pixels, "--min-image-pixels/--max-image-pixels")
            self.processor = self.processor.with_options(min_pixels=low, max_pixels=high)
        self.search_defaults = dict(folder.search)
        context = folder.context_length
        default_len = int(self.search_defaults.get("max_length") or context or 4096)
        if max_model_len is not None and context and max_model_len > context:
            raise ServerError(
                f"--max-model-len {max_model_len} is longer than the model's context of {context} tokens; give at most {context}"
            )
        self.context = max_model_len or default_len
        self.processor.context_length = None  # prepare() checks the prompt against the server's limit (too_long)
        self.eos = set(folder.eos_token_ids)
        self.vocab_size = folder.vocab_size or 0
        self.constraints = ConstraintChecker.for_folder(folder)
        # llguidance's tokenizer for the checks (0.6 s for Qwen's vocabulary) is built while the model loads
        threading.Thread(target=self._warm_constraints, name="constraint-tokenizer", daemon=True).start()
        self.worker = self._start_worker()

    def _warm_constraints(self) -> None:
        try:
            self.constraints.tokenizer()
        except Exception as exc:  # noqa: BLE001 - a structured request meets it again, as its own error
            log.warning("llguidance cannot read %s/tokenizer.json (%s); structured output will fail", self.model_dir, exc)

    def _start_worker(self) -> Worker:
        worker = Worker(self.model_dir, self.threads)
        try:
            worker.wait_ready()
        except ValueError:
            worker.close()
            raise
        return worker

    def restart_worker(self, stopping=lambda: False) -> None:
        """A new worker process in place of a dead one (ValueError if it cannot load the model);
        closed again at once if the server began ``stopping`` meanwhile."""
        worker = self._start_worker()
        worker.on_death = self.worker.on_death
        self.worker = worker
        if stopping():
            worker.close()

    # ------------------------------------------------------------------ preparing
    def _pixel_limits(self, low, high, param: str) -> tuple[int | None, int | None]:
        """Image pixel limits a request (or the server's flags) may set: within the checkpoint's."""
        ckpt_low, ckpt_high = self.limits
        factor = self.processor.image_settings.factor
        for name, value in (("min_pixels", low), ("max_pixels", high)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise bad_request(f"{param}: {name} must be a positive integer, got {json.dumps(value)}", param)
        low_eff = ckpt_low if low is None else low
        high_eff = ckpt_high if high is None else high
        if low is not None and low < factor * factor:
            raise bad_request(f"{param}: min_pixels {low} is below one merged patch ({factor}x{factor} = {factor * factor} pixels)", param)
        if high is not None and high > ckpt_high:
            raise bad_request(f"{param}: max_pixels {high} is above the checkpoint's limit of {ckpt_high} pixels", param)
        if low_eff > high_eff:
            raise bad_request(f"{param}: min_pixels {low_eff} is above max_pixels {high_eff}", param)
        return low, high

    def _processor_for(self, mm: dict) -> Qwen3VLProcessor:
        unknown = sorted(set(mm) - set(MM_KEYS))
        if unknown:
            raise bad_request(
                f"mm_processor_kwargs: unknown keys {', '.join(unknown)} (allowed: {', '.join(MM_KEYS)})", "mm_processor_kwargs"
            )
        if not mm:
            return self.processor
        low, high = self._pixel_limits(mm.get("min_pixels"), mm.get("max_pixels"), "mm_processor_kwargs")
        fps = mm.get("fps")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= MAX_FPS):
            raise bad_request(
                f"mm_processor_kwargs: fps must be a number in (0, {MAX_FPS:g}], got {json.dumps(fps)}", "mm_processor_kwargs"
            )
        settings = self.processor.image_settings
        if low is None and high is not None and high < settings.min_pixels:
            low = high  # a budget below the server's floor: the floor follows it down
        if high is None and low is not None and low > settings.max_pixels:
            high = low
        return self.processor.with_options(min_pixels=low, max_pixels=high, fps=fps)

    def check(self, request: ChatRequest, limit_images: int, limit_videos: int) -> Qwen3VLProcessor:
        """The checks that cost nothing (counts, mm_processor_kwargs), made before the request
        is admitted; the processor for its options."""
        if len(request.images) > limit_images:
            raise bad_request(
                f"the request has {len(request.images)} images; this server takes at most {limit_images} (--limit-images)",
                "messages",
                "too_many_images",
            )
        if len(request.videos) > limit_videos:
            raise bad_request(
                f"the request has {len(request.videos)} videos; this server takes at most {limit_videos} (--limit-videos)",
                "messages",
                "too_many_videos",
            )
        return self._processor_for(request.mm_kwargs)

    def check_constraint(self, request: ChatRequest) -> None:
        """The request's structured output compiled and checked (cached by its text): a 400
        naming the problem, before the request is queued."""
        if request.constraint is None:
            return
        try:
            self.constraints.check(request.constraint)
        except ConstraintError as exc:
            raise bad_request(str(exc), request.constraint_param, "invalid_constraint") from None

    def prepare(
        self,
        request: ChatRequest,
        processor: Qwen3VLProcessor,
        media: MediaPolicy,
        max_request_pixels: int | None = None,
        work: budget.Budget | None = None,
    ) -> Prepared:
        """Template, media, preprocessing, length checks with ``processor`` (what ``check`` gave
        for the request); the server runs it once the request holds a generation slot (so
        --max-concurrency bounds this work and its memory), within ``work``: --timeout and the
        client going away stop it (APIError 408 / 499) between template lines, images and video
        frames. The media's decoded size is checked against ``max_request_pixels``
        (--max-request-pixels) from the headers before a pixel is decoded."""
        with (work or budget.Budget(float("inf"))).active():
            try:
                return self._prepare(request, processor, media, max_request_pixels)
            except budget.Cancelled as exc:
                if exc.reason == "timeout":
                    raise APIError(
                        408,
                        "the request ran past --timeout while its input was prepared and was stopped",
                        type="timeout_error",
                        code="timeout",
                    ) from None
                raise APIError(499, "the client closed the request", code="client_closed_request") from None

    def _prepare(self, request: ChatRequest, processor: Qwen3VLProcessor, media: MediaPolicy, max_request_pixels: int | None) -> Prepared:
        text = json.dumps([request.messages, request.tools, request.template_kwargs], ensure_ascii=False, default=str)
        limits = TemplateLimits(seconds=TEMPLATE_SECONDS, max_chars=max(TEMPLATE_MIN_CHARS, 4 * len(text)))
        try:
            prompt = render_chat_template(
                self.processor.chat_template, request.messages, True, limits, tools=request.tools, **request.template_kwargs
            )
        except budget.Cancelled:
            raise
        except TemplateLimitError as exc:
            raise bad_request(
                f"{exc} and was stopped (the server's budget for the checkpoint's chat template)",
                "messages",
                "chat_template_error",
            ) from None
        except Exception as exc:  # noqa: BLE001 - jinja raises anything the template does (raise_exception, undefined, type errors)
            raise bad_request(f"the chat template refused the messages: {exc}", "messages", "chat_template_error") from None
        payloads = [media.image_bytes(url, f"image {i}") for i, url in enumerate(request.images)]
        pixels = sum(media.image_pixels(payload, f"image {i}") for i, payload in enumerate(payloads))
        with contextlib.ExitStack() as stack:
            videos = [stack.enter_context(media.video(url, f"video {i}")) for i, url in enumerate(request.videos)]
            pixels += sum(video_decode_pixels(path, processor.sampling, processor.video_settings) for path in videos)
            if max_request_pixels is not None and pixels > max_request_pixels:
                raise bad_request(
                    f"the request's images and videos come to {pixels} decoded pixels, more than this server "
                    f"decodes for one request ({max_request_pixels}; --max-request-pixels); send fewer or "
                    "smaller images, or shorter videos (mm_processor_kwargs.fps)",
                    "messages",
                    "media_too_large",
                )
            images = []
            for i, payload in enumerate(payloads):
                budget.check()
                images.append(media.decode_image(payload, f"image {i}"))
            del payloads
            try:
                out = processor.process(prompt, images=images, videos=videos)
            except ValueError as exc:
                raise bad_request(f"the processor refused the input: {exc}", "messages", "invalid_media") from None
        budget.check()
        prompt_ids = [int(t) for t in out.input_ids[0]]
        n = len(prompt_ids)
        wanted = request.sampling.max_tokens
        if n >= self.context or (wanted is not None and n + wanted > self.context):
            raise too_long(n, wanted, self.context)
        max_tokens = wanted if wanted is not None else self.context - n
        opened_think = prompt.rstrip().endswith("<think>")
        return Prepared(
            arrays=out.og_arrays(),
            prompt_ids=prompt_ids,
            search=self._search(request, n, n + max_tokens),
            max_tokens=max_tokens,
            opened_think=opened_think,
            guidance=request.constraint.guidance(opened_think) if request.constraint is not None else None,
        )

    def _search(self, request: ChatRequest, len_prompt: int, max_length: int) -> dict:
        """og search options: the checkpoint's defaults (genai_config.json, from its
        generation_config.json), overridden by what the request gives. temperature 0 = greedy."""
        d, s = self.search_defaults, request.sampling
        options = {k: d[k] for k in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty") if k in d}
        options["max_length"] = max_length
        if s.temperature is not None:
            options["do_sample"] = s.temperature > 0
            if s.temperature > 0:
                options["temperature"] = s.temperature
        for key in ("top_p", "repetition_penalty"):
            if getattr(s, key) is not None:
                options[key] = getattr(s, key)
        if s.top_k is not None:
            # -1 / 0: no top-k cut; og refuses a top_k above the vocabulary, which cuts nothing either
            options["top_k"] = min(s.top_k, self.vocab_size or s.top_k) if s.top_k > 0 else max(self.vocab_size, 1)
        if s.seed is not None:
            options["random_seed"] = s.seed
        if s.min_tokens:
            options["min_length"] = min(max_length, len_prompt + s.min_tokens)
        return options


def check_model_dir(path: Path) -> None:
    """A clear refusal before anything loads: a missing folder, one that is no export, or one
    whose genai_config.json or manifest.json is damaged (a FolderError, a ValueError)."""
    ExportedFolder.open(path)
