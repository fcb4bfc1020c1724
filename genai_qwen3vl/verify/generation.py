"""Greedy generation end to end, through the stock og API and through transformers, and their
comparison: prompt ids, og's 3D position ids against ``get_rope_index``, tokens, and the logits
at every step."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ParityError
from ..model.folder import ExportedFolder
from ..runtime.generate import TokenStream
from .compare import Diff, limit_at, maxdiff, within
from .reference import Reference


# --------------------------------------------------------------------------- end to end
@dataclasses.dataclass
class Generation:
    prompt_ids: list[int]
    tokens: list[int]
    logits: list[np.ndarray]  # one [vocab] row per generated step (raw model logits)
    position_ids: np.ndarray | None = None  # [3, prompt_len] for the prompt
    text: str = ""
    # token ids whose logits the generator overwrote (og applies min_length to eos in place)
    suppressed: tuple[int, ...] = ()


_OG_MODELS: dict[str, object] = {}


def og_model(out_dir: Path):
    """og.Model for a folder, loaded once per process."""
    import onnxruntime_genai as og

    key = str(Path(out_dir).resolve())
    if key not in _OG_MODELS:
        _OG_MODELS[key] = og.Model(key)
    return _OG_MODELS[key]


def og_inputs(out_dir: Path, prompt: str, images: Sequence = (), videos: Sequence = (), video_fps=None, processor: str = "ours"):
    """og.NamedTensors for a prompt: from this project's ``Qwen3VLProcessor`` (``"ours"``, exact
    transformers preprocessing, videos too) or og's stock multimodal processor (``"stock"``,
    image file paths only), exactly as og's samples call it."""
    import onnxruntime_genai as og

    if processor == "ours":
        from ..runtime.processor import Qwen3VLProcessor

        return Qwen3VLProcessor(out_dir)(prompt, images=list(images), videos=list(videos), video_fps=video_fps)
    if processor != "stock":
        raise ValueError(f"processor must be 'ours' or 'stock', got {processor!r}")
    if videos:
        raise ValueError("og's stock processor takes no videos for Qwen3-VL; use processor='ours'")
    stock = og_model(out_dir).create_multimodal_processor()
    return stock(prompt, images=og.Images.open(*[str(p) for p in images]) if images else None)


def og_generate(
    out_dir: Path,
    prompt: str,
    images: Sequence = (),
    steps: int = 16,
    videos: Sequence = (),
    video_fps=None,
    processor: str = "stock",
) -> Generation:
    """Greedy generation through the stock og API: og.Model, og.GeneratorParams, og.Generator
    (runtime.generate's TokenStream), with inputs from ``og_inputs``."""
    import onnxruntime_genai as og

    model = og_model(out_dir)
    inputs = og_inputs(out_dir, prompt, images, videos, video_fps, processor)
    prompt_ids = inputs["input_ids"].as_numpy().reshape(-1).astype(int).tolist()
    total = len(prompt_ids) + steps
    logits, positions = [], None
    stream = TokenStream(model, inputs, {"do_sample": False, "max_length": total, "min_length": total}, lambda: len(stream.tokens) >= steps)
    for _ in stream:
        if positions is None:
            positions = np.array(stream.generator.get_input("position_ids"))[:, 0, :]
        logits.append(np.array(stream.generator.get_output("logits")[0, -1], dtype=np.float32))
    tokens = stream.tokens
    text = og.Tokenizer(model).decode(tokens)
    # min_length keeps eos from ending the run early; og enforces it by overwriting the eos
    # logits in the very buffer get_output returns, so those columns are not model output.
    eos = tuple(int(x) for x in model_eos_ids(out_dir))
    return Generation(prompt_ids, tokens, logits, positions, text, suppressed=eos)


def model_eos_ids(out_dir: Path) -> list[int]:
    return list(ExportedFolder.open(out_dir).eos_token_ids)


def hf_video_input(ref: Reference, video, fps: float | None = None) -> tuple[object, dict, bool]:
    """A video as transformers takes it: (frames, video_metadata, do_sample_frames).

    Frame arrays go in with their frame rate and are sampled by transformers. Files are decoded
    with transformers' own PyAV loader and sampler (its default decoder, torchcodec, is not
    installed here) and handed over already sampled."""
    if isinstance(video, (str, Path)):
        from transformers.video_utils import load_video

        frames, metadata = load_video(str(video), backend="pyav", sample_indices_fn=ref.processor.video_processor.sample_frames)
        return frames, metadata, False
    frames = np.asarray(video)
    return frames, {"fps": fps if fps is not None else 24.0, "total_num_frames": len(frames)}, True


def hf_generate(ref: Reference, prompt: str, images: Sequence = (), steps: int = 16, videos: Sequence = (), video_fps=None) -> Generation:
    """Greedy generation with transformers' model and processor (PIL image backend; its video
    processor, which has only a torchvision backend)."""
    import torch

    kwargs = {}
    if videos:
        fps_list = video_fps if isinstance(video_fps, (list, tuple)) else [video_fps] * len(videos)
        triples = [hf_video_input(ref, v, f) for v, f in zip(videos, fps_list, strict=True)]
        kwargs = dict(
            videos=[t[0] for t in triples],
            video_metadata=[t[1] for t in triples],
            do_sample_frames=all(t[2] for t in triples),
        )
    enc = ref.processor(text=[prompt], images=list(images) or None, return_tensors="pt", **kwargs).to(ref.model.device)
    with torch.no_grad():
        out = ref.model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=steps,
            min_new_tokens=steps,
            output_logits=True,
            return_dict_in_generate=True,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        positions, _ = ref.model.model.get_rope_index(
            enc["input_ids"],
            mm_token_type_ids=enc["mm_token_type_ids"],
            image_grid_thw=enc.get("image_grid_thw"),
            video_grid_thw=enc.get("video_grid_thw"),
            attention_mask=enc["attention_mask"],
        )
    prompt_len = enc["input_ids"].shape[1]
    tokens = out.sequences[0, prompt_len:].tolist()
    return Generation(
        prompt_ids=enc["input_ids"][0].tolist(),
        tokens=tokens,
        logits=[row[0].float().cpu().numpy() for row in out.logits],
        position_ids=positions[:, 0, :].cpu().numpy(),
        text=ref.processor.tokenizer.decode(tokens),
    )


@dataclasses.dataclass
class GenerationComparison:
    prompt_ids_equal: bool
    positions_equal: bool
    matching_steps: int  # leading generated tokens that agree
    steps: int
    max_logit_diff: float  # over the agreeing steps (a Diff: carries the logits' scale)
    per_step: list[float]
    distinct_tokens: int = 0  # how varied the generated tokens are (a constant run proves less)
    # where the tokens first differ: how much transformers' logits prefer its token over ours there
    divergence_margin: float | None = None

    def summary(self) -> str:
        tie = "" if self.divergence_margin is None else f", first differing step: transformers' margin {self.divergence_margin:.3g}"
        return (
            f"prompt ids {'equal' if self.prompt_ids_equal else 'DIFFER'}, "
            f"position ids {'equal' if self.positions_equal else 'DIFFER'}, "
            f"{self.matching_steps}/{self.steps} tokens agree ({self.distinct_tokens} distinct{tie}), "
            f"max |logit diff| {self.max_logit_diff:.3g} (logits up to {getattr(self.max_logit_diff, 'scale', 0.0):.3g})"
        )


def compare_generations(ours: Generation, theirs: Generation) -> GenerationComparison:
    matching = 0
    for a, b in zip(ours.tokens, theirs.tokens, strict=False):  # may differ in length
        if a != b:
            break
        matching += 1
    # a step's logits are comparable while the inputs so far agree (up to and including the
    # first differing token's step)
    comparable = min(matching + 1, len(ours.logits), len(theirs.logits))
    ignored = sorted(set(ours.suppressed) | set(theirs.suppressed))
    keep = None
    if ignored and ours.logits:
        keep = np.ones(ours.logits[0].shape[-1], dtype=bool)
        keep[[i for i in ignored if i < keep.size]] = False
    per_step = [
        maxdiff(a[keep], b[keep]) if keep is not None else maxdiff(a, b)
        for a, b in zip(ours.logits[:comparable], theirs.logits[:comparable], strict=True)
    ]
    margin = None
    if matching < min(len(ours.tokens), len(theirs.tokens)) and matching < len(theirs.logits):
        row = theirs.logits[matching]
        margin = float(row[theirs.tokens[matching]] - row[ours.tokens[matching]])
    positions_equal = (
        ours.position_ids is not None
        and theirs.position_ids is not None
        and ours.position_ids.shape == theirs.position_ids.shape
        and bool(np.array_equal(ours.position_ids, theirs.position_ids))
    )
    return GenerationComparison(
        prompt_ids_equal=ours.prompt_ids == theirs.prompt_ids,
        positions_equal=positions_equal,
        matching_steps=matching,
        steps=min(len(ours.tokens), len(theirs.tokens)),
        max_logit_diff=max(per_step) if per_step else Diff(float("inf")),
        per_step=per_step,
        distinct_tokens=len(set(theirs.tokens)),
        divergence_margin=margin,
    )


def generation_problems(cmp: GenerationComparison, tolerance, min_steps: int) -> list[str]:
    """What keeps ``cmp`` from passing: prompt ids, position ids, logits beyond ``tolerance`` at
    any compared step, fewer than ``min_steps`` equal tokens. Tokens that part at a near tie pass:
    where transformers prefers its token over ours by no more than twice the tolerance (each
    logit may differ by the tolerance, so such a flip is within it; it happens in fp16), the
    run is compared up to that step."""
    problems = []
    if not cmp.prompt_ids_equal:
        problems.append("the prompt token ids differ")
    if not cmp.positions_equal:
        problems.append("og's 3D position ids differ from get_rope_index")
    if not within(cmp.max_logit_diff, tolerance):
        problems.append(f"max |logit diff| {cmp.max_logit_diff:.3g} > {tolerance:g}")
    elif cmp.matching_steps < min_steps:
        limit = limit_at(tolerance, cmp.max_logit_diff)
        near_tie = cmp.divergence_margin is not None and cmp.divergence_margin <= 2 * limit
        if not near_tie:
            problems.append(f"only {cmp.matching_steps} greedy tokens agree (need {min_steps})")
    return problems


def assert_generation_parity(cmp: GenerationComparison, tolerance: float, min_steps: int, what: str) -> None:
    problems = generation_problems(cmp, tolerance, min_steps)
    if problems:
        raise ParityError(f"{what}: " + "; ".join(problems) + f" ({cmp.summary()})")
