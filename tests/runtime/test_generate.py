"""The generation primitive (genai_qwen3vl.runtime.generate) on a real tiny export: the tokens and
logits of og's own loop, a cancel that stops it, timings in order, both input forms, and og's
generator released however the stream ends."""

import weakref

import numpy as np
import onnxruntime_genai as og
import pytest

from genai_qwen3vl.runtime.generate import TokenStream, stream_tokens
from genai_qwen3vl.runtime.processor import Qwen3VLProcessor
from genai_qwen3vl.verify.generation import og_generate

STEPS = 8
QUESTION = "What is in this picture?"


@pytest.fixture(scope="module")
def setup(exported, image_file):
    """(folder, og.Model, prompt, picture path, the processor's output) for an image question."""
    out = exported("awkward")
    processor = Qwen3VLProcessor(out)
    picture = str(image_file(96, 128, 1))
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}])
    return out, og.Model(str(out)), prompt, picture, processor.process(prompt, images=[picture])


def greedy(processed, steps: int = STEPS) -> dict:
    """Search options for exactly ``steps`` greedy tokens after the prompt."""
    total = processed.input_ids.shape[1] + steps
    return {"do_sample": False, "max_length": total, "min_length": total}


def stock_loop(model, inputs, search) -> tuple[list[int], list[np.ndarray]]:
    """og's loop as its samples write it: the tokens and each step's last-position logits."""
    params = og.GeneratorParams(model)
    params.set_search_options(**search)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    tokens, logits = [], []
    while not generator.is_done():
        generator.generate_next_token()
        logits.append(np.array(generator.get_output("logits")[0, -1], dtype=np.float32))
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens, logits


def test_tokens_and_logits_equal_og_loop_and_verify_greedy_generation(setup):
    out, model, prompt, picture, processed = setup
    search = greedy(processed)
    stream, logits = stream_tokens(model, processed.to_named_tensors(), search), []
    for token in stream:
        assert stream.generator is not None and int(stream.generator.get_next_tokens()[0]) == token
        logits.append(np.array(stream.generator.get_output("logits")[0, -1], dtype=np.float32))
    tokens, stock_logits = stock_loop(model, processed.to_named_tensors(), search)
    assert stream.tokens == tokens and len(tokens) == STEPS
    np.testing.assert_array_equal(np.stack(logits), np.stack(stock_logits))
    verified = og_generate(out, prompt, [picture], steps=STEPS, processor="ours")
    assert verified.tokens == tokens and verified.prompt_ids == processed.input_ids[0].tolist()


def test_dict_of_numpy_inputs_equal_named_tensors(setup):
    _, model, _, _, processed = setup
    from_arrays = list(TokenStream(model, processed.og_arrays(), greedy(processed)))
    from_tensors = list(TokenStream(model, processed.to_named_tensors(), greedy(processed)))
    assert from_arrays == from_tensors and len(from_arrays) == STEPS


def test_cancel_after_n_tokens_stops_it_and_releases_the_generator(setup):
    _, model, _, _, processed = setup
    full = list(stream_tokens(model, processed.og_arrays(), greedy(processed)))
    asked = []

    def cancel() -> bool:
        asked.append(len(stream.tokens))
        return len(stream.tokens) >= 3

    stream = stream_tokens(model, processed.og_arrays(), greedy(processed), cancel)
    ref = weakref.ref(stream.generator)
    assert list(stream) == full[:3] and stream.tokens == full[:3]
    assert stream.cancelled and asked == [0, 1, 2, 3]  # asked before each step, not after the stop
    assert stream.generator is None and ref() is None
    assert list(stream) == []  # an ended stream stays ended


def test_a_stream_that_runs_out_is_not_cancelled(setup):
    _, model, _, _, processed = setup
    stream = stream_tokens(model, processed.og_arrays(), greedy(processed), lambda: False)
    ref = weakref.ref(stream.generator)
    assert len(list(stream)) == STEPS and not stream.cancelled
    assert stream.generator is None and ref() is None


def test_timings_are_non_negative_ordered_and_stop_with_the_stream(setup):
    _, model, _, _, processed = setup
    stream = stream_tokens(model, processed.og_arrays(), greedy(processed))
    assert stream.first_at is None and stream.decode_s == 0.0 and stream.prefill_s >= 0.0
    next(stream)
    first = stream.first_at
    assert first is not None and stream.start <= first
    list(stream)
    assert stream.first_at == first and first <= stream.end_at
    prefill, decode = stream.prefill_s, stream.decode_s
    assert prefill > 0.0 and decode > 0.0  # STEPS tokens: og ran the prompt, then decoded
    assert prefill == first - stream.start and decode == stream.end_at - first
    assert (stream.prefill_s, stream.decode_s) == (prefill, decode)  # frozen once ended


def test_close_and_with_release_the_generator_of_a_stream_left_early(setup):
    _, model, _, _, processed = setup
    stream = stream_tokens(model, processed.og_arrays(), greedy(processed))
    ref = weakref.ref(stream.generator)
    for _ in stream:
        break
    assert ref() is not None and stream.end_at is None  # left early: held until closed
    stream.close()
    assert stream.generator is None and ref() is None and stream.end_at is not None and not stream.cancelled
    assert list(stream) == [] and len(stream.tokens) == 1
    with stream_tokens(model, processed.og_arrays(), greedy(processed)) as stream:
        ref = weakref.ref(stream.generator)
        next(stream)
    assert ref() is None


def test_an_error_while_streaming_releases_the_generator_and_propagates(setup):
    _, model, _, _, processed = setup

    def cancel() -> bool:
        raise RuntimeError("the caller's check failed")

    stream = stream_tokens(model, processed.og_arrays(), greedy(processed), cancel)
    ref = weakref.ref(stream.generator)
    with pytest.raises(RuntimeError, match="the caller's check failed") as caught:
        next(stream)
    # the error (and the frames its traceback keeps, as a log record would) outlives the generator
    assert caught.tb is not None and ref() is None and stream.tokens == [] and stream.end_at is not None
