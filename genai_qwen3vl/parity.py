"""Parity against transformers: each artifact, then greedy generation end to end through the
stock og API. The tests and the command line's validation run this same code.

Every check returns max absolute differences; ``assert_within`` turns a report into one
error listing every output that exceeds the tolerance table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from . import io_contract
from .errors import ParityError
from .spec import Qwen3VLSpec


# --------------------------------------------------------------------------- reference side
@dataclasses.dataclass
class Reference:
    """transformers' model (fp32, eager) and processor (PIL image backend) for a checkpoint."""

    spec: Qwen3VLSpec
    model: object
    processor: object

    @classmethod
    def load(cls, checkpoint_dir: str | Path) -> "Reference":
        import torch
        from transformers import AutoImageProcessor, AutoProcessor, Qwen3VLForConditionalGeneration

        spec = Qwen3VLSpec.from_checkpoint(checkpoint_dir)
        model = Qwen3VLForConditionalGeneration.from_pretrained(
            str(checkpoint_dir), dtype=torch.float32, attn_implementation="eager"
        ).eval()
        processor = AutoProcessor.from_pretrained(str(checkpoint_dir))
        # og's stock image processor mirrors transformers' PIL backend
        processor.image_processor = AutoImageProcessor.from_pretrained(str(checkpoint_dir), backend="pil")
        return cls(spec=spec, model=model, processor=processor)


# og's decoder initializer names -> transformers parameter names
_OG_TO_HF = (
    ("model.layers.{i}.attn.{p}_proj.MatMul.weight", "model.language_model.layers.{i}.self_attn.{p}_proj.weight", ("q", "k", "v", "o")),
    ("model.layers.{i}.mlp.{p}_proj.MatMul.weight", "model.language_model.layers.{i}.mlp.{p}_proj.weight", ("gate", "up", "down")),
)


def matmulnbits_weights(model_path: Path) -> dict[str, np.ndarray]:
    """Dequantize every MatMulNBits weight of a graph: {og weight name: W [K, N] float32}.
    4-bit values are packed two per byte (low nibble first) per block of ``block_size`` along K;
    symmetric quantization has the implicit zero point 8."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    inits = {t.name: t for t in model.graph.initializer}
    weights = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in node.attribute}
        if attrs["bits"] != 4:
            raise ParityError(f"{node.name}: only 4-bit MatMulNBits is dequantized here")
        K, N, block = attrs["K"], attrs["N"], attrs["block_size"]
        packed = numpy_helper.to_array(inits[node.input[1]])
        scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32).reshape(N, -1)
        if len(node.input) > 3 and node.input[3]:
            raise ParityError(f"{node.name}: asymmetric (zero-point) weights are not dequantized here")
        low, high = packed & 0x0F, packed >> 4
        q = np.stack([low, high], axis=-1).reshape(N, packed.shape[1], block).astype(np.float32)
        w = ((q - 8.0) * scales[:, :, None]).reshape(N, -1)[:, :K]
        weights[node.input[1].rsplit("_Q4", 1)[0]] = np.ascontiguousarray(w.T)
    return weights


def dequantized_reference(ref: Reference, out_dir: Path) -> Reference:
    """A copy of the reference whose text weights are the int4 decoder's, dequantized: the int4
    graph must compute exactly what transformers computes with them."""
    import copy

    import torch

    weights = matmulnbits_weights(Path(out_dir) / "model.onnx")
    model = copy.deepcopy(ref.model)
    params = dict(model.named_parameters())
    layers = ref.spec.text.num_hidden_layers
    with torch.no_grad():
        for og_pattern, hf_pattern, parts in _OG_TO_HF:
            for i in range(layers):
                for p in parts:
                    params[hf_pattern.format(i=i, p=p)].copy_(torch.from_numpy(weights.pop(og_pattern.format(i=i, p=p)).T))
        lm = weights.pop("lm_head.MatMul.weight", None)
        if lm is not None:  # untie: the embedding graph keeps the full-precision table
            model.lm_head.weight = torch.nn.Parameter(torch.from_numpy(lm.T.copy()))
    if weights:
        raise ParityError(f"quantized weights with no transformers counterpart: {sorted(weights)}")
    return Reference(spec=ref.spec, model=model, processor=ref.processor)


class _Session:
    """An ORT CPU session that takes and returns float32 whatever float type the graph uses
    (fp16 graphs get fp16 inputs; outputs come back as float32 for comparison)."""

    _TYPES = {"tensor(float16)": np.float16, "tensor(float)": np.float32}

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, _, feeds: dict) -> list[np.ndarray]:
        cast = {}
        for name, value in feeds.items():
            want = self._TYPES.get(self.input_types.get(name, ""))
            cast[name] = value.astype(want) if want is not None and np.issubdtype(value.dtype, np.floating) else value
        return [o.astype(np.float32) if np.issubdtype(o.dtype, np.floating) else o for o in self.session.run(None, cast)]


def _session(path: Path) -> _Session:
    return _Session(path)


class Diff(float):
    """A max |difference|, carrying ``scale``: the reference's largest magnitude."""

    scale: float

    def __new__(cls, value: float, scale: float = 0.0) -> "Diff":
        diff = float.__new__(cls, value)
        diff.scale = scale
        return diff


def _maxdiff(a, b) -> Diff:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ParityError(f"shape mismatch: {a.shape} vs {b.shape}")
    if not a.size:
        return Diff(0.0)
    return Diff(float(np.abs(a - b).max()), float(np.abs(b).max()))


def within(diff: float, bound: float) -> bool:
    """``diff <= bound``, with the bound widened by its relative part at the diff's scale."""
    limit = bound.limit(getattr(diff, "scale", 0.0)) if hasattr(bound, "limit") else float(bound)
    return diff <= limit


def assert_within(report: dict[str, float], tolerance: float, what: str) -> None:
    bad = {k: v for k, v in report.items() if not within(v, tolerance)}
    if bad:
        listing = ", ".join(f"{k}: {v:.3g}" for k, v in report.items())
        raise ParityError(f"{what} differs from transformers beyond {tolerance:g} in {sorted(bad)} ({listing})")


# --------------------------------------------------------------------------- vision
def random_pixel_values(spec: Qwen3VLSpec, grids: Sequence[Sequence[int]], seed: int) -> np.ndarray:
    rows = sum(t * h * w for t, h, w in grids)
    return np.random.default_rng(seed).standard_normal((rows, spec.vision.patch_dim)).astype(np.float32)


def vision_parity(out_dir: Path, ref: Reference, grids: Sequence[Sequence[int]], seed: int = 0) -> dict[str, float]:
    """vision.onnx vs ``get_image_features``: main features and each DeepStack set."""
    import torch

    pixel_values = random_pixel_values(ref.spec, grids, seed)
    grid = np.asarray(grids, dtype=np.int64)
    got = _session(Path(out_dir) / io_contract.VISION.filename).run(
        None, {"pixel_values": pixel_values, "image_grid_thw": grid}
    )[0]
    with torch.no_grad():
        out = ref.model.model.get_image_features(torch.from_numpy(pixel_values).to(ref.model.dtype), torch.from_numpy(grid))
    main = torch.cat(out.pooler_output).float().numpy()
    stacks = [torch.cat(f).float().numpy() for f in out.deepstack_features]
    H = ref.spec.text.hidden_size
    if got.shape != (main.shape[0], ref.spec.feature_width):
        raise ParityError(f"vision.onnx returned {got.shape}, expected {(main.shape[0], ref.spec.feature_width)}")
    report = {"main": _maxdiff(got[:, :H], main)}
    for k, feat in enumerate(stacks):
        report[f"deepstack.{k}"] = _maxdiff(got[:, (k + 1) * H : (k + 2) * H], feat)
    return report


# --------------------------------------------------------------------------- embedding
def reference_inputs_embeds(ref: Reference, input_ids: np.ndarray, features: np.ndarray) -> np.ndarray:
    """What transformers feeds its decoder, laid out (1+K)*H wide: token embeddings, image rows
    ``masked_scatter``-ed into image pads and the following rows into video pads (as
    ``Qwen3VLModel.forward`` does with image and video features), DeepStack rows beside them at
    the same positions (``visual_pos_masks``). At a decode step (no feature rows) transformers
    embeds every token, pads included, with the plain token embedding."""
    import torch

    H, K = ref.spec.text.hidden_size, ref.spec.num_deepstack
    ids = torch.from_numpy(input_ids)
    model = ref.model.model
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids).float()
    full = torch.zeros(*ids.shape, (1 + K) * H)
    full[..., :H] = embeds
    if features.shape[0]:
        rows = torch.from_numpy(features)
        n_image = int((ids == ref.spec.tokens.image_token_id).sum())
        image_rows, video_rows = rows[:n_image], rows[n_image:]
        image_mask, _ = model.get_placeholder_mask(ids, inputs_embeds=embeds, image_features=image_rows[:, :H])
        _, video_mask = model.get_placeholder_mask(ids, inputs_embeds=embeds, video_features=video_rows[:, :H])
        full = full.masked_scatter(image_mask.expand_as(full), image_rows)
        full = full.masked_scatter(video_mask.expand_as(full), video_rows)
    return full.numpy()


def embedding_parity(out_dir: Path, ref: Reference, seed: int = 0) -> dict[str, float]:
    """embedding.onnx vs transformers' embedding + scatter: a prompt with image tokens, a batch
    of two, and decode steps (0 feature rows) including a generated image-pad id."""
    rng = np.random.default_rng(seed)
    t = ref.spec.tokens
    text_ids = [i for i in range(min(ref.spec.text.vocab_size, 1000)) if i not in (t.image_token_id, t.video_token_id)]
    W = ref.spec.feature_width
    sess = _session(Path(out_dir) / io_contract.EMBEDDING.filename)

    def case(ids, rows):
        ids = np.asarray(ids, dtype=np.int64)
        feats = rng.standard_normal((rows, W)).astype(np.float32)
        got = sess.run(None, {"input_ids": ids, "image_features": feats})[0]
        return _maxdiff(got, reference_inputs_embeds(ref, ids, feats))

    pad = t.image_token_id
    prompt = [rng.choice(text_ids) for _ in range(3)] + [pad] * 5 + [rng.choice(text_ids) for _ in range(2)]
    video = [t.vision_start_token_id, t.video_token_id, t.video_token_id, t.vision_end_token_id]
    return {
        "prompt": case([prompt], 5),
        "prompt_video_before_image": case([video + prompt], 7),
        "prompt_image_and_video": case([prompt + video], 7),
        "batch_of_two": case([prompt[:5], [rng.choice(text_ids) for _ in range(5)]], 2),
        "decode_step": case([[rng.choice(text_ids)]], 0),
        "decode_step_image_pad": case([[pad]], 0),
    }


# --------------------------------------------------------------------------- decoder
def decoder_parity(out_dir: Path, ref: Reference, seed: int = 0, prompt_len: int = 11, decode_steps: int = 3):
    """model.onnx (raw ORT) vs transformers' language model + lm_head with DeepStack inputs:
    a prefill with visual positions, then decode steps through the KV cache."""
    import torch
    from transformers import DynamicCache

    spec = ref.spec
    H, K, L = spec.text.hidden_size, spec.num_deepstack, spec.text.num_hidden_layers
    kv, hd = spec.text.num_key_value_heads, spec.text.head_dim
    gen = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, prompt_len, H, generator=gen)
    visual = torch.zeros(1, prompt_len, dtype=torch.bool)
    visual[0, 2 : 2 + prompt_len // 2] = True
    deepstack = [torch.randn(int(visual.sum()), H, generator=gen) for _ in range(K)]
    # 3D positions like an image block: t constant, h/w varying
    pos = torch.arange(prompt_len).repeat(3, 1)
    n_vis = int(visual.sum())
    pos[1, visual[0]] = 2 + torch.arange(n_vis) // 2
    pos[2, visual[0]] = 2 + torch.arange(n_vis) % 2
    pos[0, visual[0]] = 2
    pos = pos[:, None, :]

    full = torch.zeros(1, prompt_len, (1 + K) * H)
    full[..., :H] = embeds
    for k in range(K):
        full[0, visual[0], (k + 1) * H : (k + 2) * H] = deepstack[k]

    sess = _session(Path(out_dir) / io_contract.DECODER.filename)
    feeds = {f"past_key_values.{i}.{kind}": np.zeros((1, kv, 0, hd), np.float32) for i in range(L) for kind in ("key", "value")}
    cache = DynamicCache(config=ref.model.config.text_config)
    report = {}
    total = 0
    step_inputs = [(full, pos, embeds, True)]
    next_pos = int(pos.max()) + 1
    for s in range(decode_steps):
        e = torch.randn(1, 1, H, generator=gen)
        f = torch.zeros(1, 1, (1 + K) * H)
        f[..., :H] = e
        step_inputs.append((f, torch.full((3, 1, 1), next_pos + s), e, False))
    for step, (f, p, e, is_prefill) in enumerate(step_inputs):
        total += f.shape[1]
        feeds.update(
            inputs_embeds=f.numpy(),
            attention_mask=np.ones((1, total), np.int64),
            position_ids=p.numpy().astype(np.int64),
        )
        outputs = sess.run(None, feeds)
        names = [o.name for o in sess.get_outputs()]
        result = dict(zip(names, outputs))
        for i in range(L):
            feeds[f"past_key_values.{i}.key"] = result[f"present.{i}.key"]
            feeds[f"past_key_values.{i}.value"] = result[f"present.{i}.value"]
        dtype = ref.model.dtype
        with torch.no_grad():
            out = ref.model.model.language_model(
                inputs_embeds=e.to(dtype),
                position_ids=p,
                cache=cache,
                use_cache=True,
                visual_pos_masks=visual if is_prefill else None,
                deepstack_visual_embeds=[d.to(dtype) for d in deepstack] if is_prefill else None,
            )
            logits = ref.model.lm_head(out.last_hidden_state).float().numpy()
        if result["logits"].shape[1] == 1:  # trimmed prefill logits: the last position only
            logits = logits[:, -1:]
        report["prefill" if is_prefill else f"decode.{step}"] = _maxdiff(result["logits"], logits)
    return report


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
        from .processing import Qwen3VLProcessor

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
    """Greedy generation through the stock og API: og.Model, og.GeneratorParams, og.Generator,
    with inputs from ``og_inputs``."""
    import onnxruntime_genai as og

    model = og_model(out_dir)
    inputs = og_inputs(out_dir, prompt, images, videos, video_fps, processor)
    prompt_ids = inputs["input_ids"].as_numpy().reshape(-1).astype(int).tolist()
    total = len(prompt_ids) + steps
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=total, min_length=total)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    tokens, logits, positions = [], [], None
    while not generator.is_done() and len(tokens) < steps:
        generator.generate_next_token()
        if positions is None:
            positions = np.array(generator.get_input("position_ids"))[:, 0, :]
        logits.append(np.array(generator.get_output("logits")[0, -1], dtype=np.float32))
        tokens.append(int(generator.get_next_tokens()[0]))
    text = og.Tokenizer(model).decode(tokens)
    # min_length keeps eos from ending the run early; og enforces it by overwriting the eos
    # logits in the very buffer get_output returns, so those columns are not model output.
    eos = tuple(int(x) for x in model_eos_ids(out_dir))
    return Generation(prompt_ids, tokens, logits, positions, text, suppressed=eos)


def model_eos_ids(out_dir: Path) -> list[int]:
    import json

    config = json.loads((Path(out_dir) / "genai_config.json").read_text())
    eos = config["model"]["eos_token_id"]
    return eos if isinstance(eos, list) else [eos]


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


def hf_generate(
    ref: Reference, prompt: str, images: Sequence = (), steps: int = 16, videos: Sequence = (), video_fps=None
) -> Generation:
    """Greedy generation with transformers' model and processor (PIL image backend; its video
    processor, which has only a torchvision backend)."""
    import torch

    kwargs = {}
    if videos:
        fps_list = video_fps if isinstance(video_fps, (list, tuple)) else [video_fps] * len(videos)
        triples = [hf_video_input(ref, v, f) for v, f in zip(videos, fps_list)]
        kwargs = dict(
            videos=[t[0] for t in triples],
            video_metadata=[t[1] for t in triples],
            do_sample_frames=all(t[2] for t in triples),
        )
    enc = ref.processor(text=[prompt], images=list(images) or None, return_tensors="pt", **kwargs)
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
        logits=[row[0].float().numpy() for row in out.logits],
        position_ids=positions[:, 0, :].numpy(),
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

    def summary(self) -> str:
        return (
            f"prompt ids {'equal' if self.prompt_ids_equal else 'DIFFER'}, "
            f"position ids {'equal' if self.positions_equal else 'DIFFER'}, "
            f"{self.matching_steps}/{self.steps} tokens agree ({self.distinct_tokens} distinct), "
            f"max |logit diff| {self.max_logit_diff:.3g} (logits up to {getattr(self.max_logit_diff, 'scale', 0.0):.3g})"
        )


def compare_generations(ours: Generation, theirs: Generation) -> GenerationComparison:
    matching = 0
    for a, b in zip(ours.tokens, theirs.tokens):
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
        _maxdiff(a[keep], b[keep]) if keep is not None else _maxdiff(a, b)
        for a, b in zip(ours.logits[:comparable], theirs.logits[:comparable])
    ]
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
    )


def assert_generation_parity(cmp: GenerationComparison, tolerance: float, min_steps: int, what: str) -> None:
    problems = []
    if not cmp.prompt_ids_equal:
        problems.append("the prompt token ids differ")
    if not cmp.positions_equal:
        problems.append("og's 3D position ids differ from get_rope_index")
    if cmp.matching_steps < min_steps:
        problems.append(f"only {cmp.matching_steps} greedy tokens agree (need {min_steps})")
    if not within(cmp.max_logit_diff, tolerance):
        problems.append(f"max |logit diff| {cmp.max_logit_diff:.3g} > {tolerance:g}")
    if problems:
        raise ParityError(f"{what}: " + "; ".join(problems) + f" ({cmp.summary()})")
