"""The one og generation loop: ``og.GeneratorParams`` with search options, ``og.Generator`` with
the processor's inputs, then one token per step until og says it is done or the caller cancels.

Every consumer goes through it: the chat command, the server's worker, verify's greedy runs, the
demo, the benchmarks and the examples. Structured output joins here: ``guidance`` is og's
``(type, data)`` (``constraints.Constraint.guidance()``), set on the generator's parameters.

>>> stream = TokenStream(model, inputs, {"do_sample": False, "max_length": 256})
>>> json_only = TokenStream(model, inputs, search, guidance=Constraint.json_schema(schema).guidance())
>>> for token in stream:
...     print(tokenizer_stream.decode(token), end="")
>>> stream.prefill_s, stream.decode_s
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

import numpy as np

SECTIONS = ("decoder", "vision", "embedding")  # the sessions og's model holds


def load_model(model_dir, threads: int | None = None):
    """og's model, with ``threads`` intra-op threads in each of its sessions (None: og's default,
    every core)."""
    import json

    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    if threads:
        options = {"session_options": {"intra_op_num_threads": threads}}
        config.overlay(json.dumps({"model": {section: options for section in SECTIONS}}))
    return og.Model(config)


def og_inputs(inputs):
    """``og.NamedTensors`` as they are, or a ``{name: numpy array}`` mapping converted."""
    if isinstance(inputs, Mapping):
        from .processor import named_tensors

        return named_tensors(dict(inputs))
    return inputs


def new_generator(model, inputs, search: Mapping, guidance: tuple[str, str] | None = None):
    """An ``og.Generator`` for ``model`` with ``search`` options set, og's ``guidance`` (type,
    data) if any, and ``inputs`` given."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(**search)
    if guidance is not None:
        params.set_guidance(*guidance)
    generator = og.Generator(model, params)
    generator.set_inputs(og_inputs(inputs))
    return generator


class TokenStream:
    """Iterate for the generated token ids (Python ints), one per og step.

    ``cancel`` is asked before each step (``threading.Event.is_set`` fits); when it answers true
    the stream ends and ``cancelled`` is set. ``generator`` is the og.Generator, readable after
    each token (``get_output("logits")``, ``get_input("position_ids")``). ``tokens``: the ids so
    far. Timings: ``prefill_s`` (start to the first token: inputs, vision, prompt), ``decode_s``
    (first token to the last); ``start``, ``first_at`` and ``end_at`` are their
    ``time.perf_counter`` instants. The generator (and its KV cache) is released when the stream
    ends (og done, cancelled, or an error from og), by ``close()``, or on leaving a ``with`` block;
    a stream left early (``break``) holds it until one of those.
    """

    def __init__(self, model, inputs, search: Mapping, cancel: Callable[[], bool] | None = None, guidance: tuple[str, str] | None = None):
        self.start = time.perf_counter()
        self.generator = new_generator(model, inputs, search, guidance)
        self.cancel = cancel
        self.cancelled = False
        self.tokens: list[int] = []
        self.first_at: float | None = None
        self.end_at: float | None = None

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        generator = self.generator
        if generator is None:
            raise StopIteration
        try:
            if generator.is_done():
                raise StopIteration
            if self.cancel is not None and self.cancel():
                self.cancelled = True
                raise StopIteration
            generator.generate_next_token()
            if self.first_at is None:
                self.first_at = time.perf_counter()
            token = int(np.asarray(generator.get_next_tokens())[0])
        except BaseException:  # the end, a cancel, or og's error: the stream is over either way
            generator = None  # a traceback keeps this frame: it must not keep the generator
            self.close()
            raise
        self.tokens.append(token)
        return token

    def close(self) -> None:
        """End the stream and release og's generator (its KV cache) now rather than when the
        stream is collected; the timings stop here."""
        if self.end_at is None:
            self.end_at = time.perf_counter()
        self.generator = None

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def prefill_s(self) -> float:
        end = self.end_at if self.end_at is not None else time.perf_counter()
        return (self.first_at or end) - self.start

    @property
    def decode_s(self) -> float:
        end = self.end_at if self.end_at is not None else time.perf_counter()
        return end - (self.first_at or end)


def stream_tokens(
    model, inputs, search: Mapping, cancel: Callable[[], bool] | None = None, guidance: tuple[str, str] | None = None
) -> TokenStream:
    """``TokenStream(model, inputs, search, cancel, guidance)``: the generation primitive."""
    return TokenStream(model, inputs, search, cancel, guidance)
