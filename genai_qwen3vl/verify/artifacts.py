"""Each exported graph against transformers: shapes, then values (max |difference| per output).

``vision_parity`` (main features and every DeepStack set), ``embedding_parity`` (prompts, video
pads, batches, decode steps) and ``decoder_parity`` (prefill and decode steps through the KV
cache, raw onnxruntime) each return a report {case: difference}; ``compare.assert_within``
turns one into an error listing every case beyond the tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ParityError
from ..model import io_contract
from ..model.spec import Qwen3VLSpec
from .compare import Float32Session, maxdiff
from .reference import Reference


# --------------------------------------------------------------------------- vision
def random_pixel_values(spec: Qwen3VLSpec, grids: Sequence[Sequence[int]], seed: int) -> np.ndarray:
    rows = sum(t * h * w for t, h, w in grids)
    return np.random.default_rng(seed).standard_normal((rows, spec.vision.patch_dim)).astype(np.float32)


def vision_parity(out_dir: Path, ref: Reference, grids: Sequence[Sequence[int]], seed: int = 0) -> dict[str, float]:
    """vision.onnx vs ``get_image_features``: main features and each DeepStack set."""
    import torch

    pixel_values = random_pixel_values(ref.spec, grids, seed)
    grid = np.asarray(grids, dtype=np.int64)
    got = Float32Session(Path(out_dir) / io_contract.VISION.filename).run(None, {"pixel_values": pixel_values, "image_grid_thw": grid})[0]
    with torch.no_grad():
        out = ref.model.model.get_image_features(torch.from_numpy(pixel_values).to(ref.model.dtype), torch.from_numpy(grid))
    main = torch.cat(out.pooler_output).float().numpy()
    stacks = [torch.cat(f).float().numpy() for f in getattr(out, "deepstack_features", None) or ()]  # none for Qwen3.5
    H = ref.spec.text.hidden_size
    if got.shape != (main.shape[0], ref.spec.feature_width):
        raise ParityError(f"vision.onnx returned {got.shape}, expected {(main.shape[0], ref.spec.feature_width)}")
    report = {"main": maxdiff(got[:, :H], main)}
    for k, feat in enumerate(stacks):
        report[f"deepstack.{k}"] = maxdiff(got[:, (k + 1) * H : (k + 2) * H], feat)
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
    sess = Float32Session(Path(out_dir) / io_contract.EMBEDDING.filename)

    def case(ids, rows):
        ids = np.asarray(ids, dtype=np.int64)
        feats = rng.standard_normal((rows, W)).astype(np.float32)
        got = sess.run(None, {"input_ids": ids, "image_features": feats})[0]
        return maxdiff(got, reference_inputs_embeds(ref, ids, feats))

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
    H, K = spec.text.hidden_size, spec.num_deepstack
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

    sess = Float32Session(Path(out_dir) / io_contract.DECODER.filename)
    full_layers = spec.text.full_attention_layers
    feeds = {f"past_key_values.{i}.{kind}": np.zeros((1, kv, 0, hd), np.float32) for i in full_layers for kind in ("key", "value")}
    # Qwen3.5's linear-attention layers start from a zero state, as og starts them
    state = [d for d in io_contract.linear_state(spec) if d.name.startswith("past.")]
    feeds.update({d.name: np.zeros([1 if x == "batch_size" else x for x in d.concrete_shape(spec)], np.float32) for d in state})
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
        result = dict(zip(names, outputs, strict=True))
        for i in full_layers:
            feeds[f"past_key_values.{i}.key"] = result[f"present.{i}.key"]
            feeds[f"past_key_values.{i}.value"] = result[f"present.{i}.value"]
        for d in state:
            feeds[d.name] = result["present." + d.name.removeprefix("past.")]
        dtype = ref.model.dtype
        deepstack_inputs = {}
        if K:  # Qwen3-VL's language model takes the DeepStack rows; Qwen3.5's has none
            deepstack_inputs = dict(
                visual_pos_masks=visual if is_prefill else None,
                deepstack_visual_embeds=[d.to(dtype) for d in deepstack] if is_prefill else None,
            )
        with torch.no_grad():
            out = ref.model.model.language_model(inputs_embeds=e.to(dtype), position_ids=p, cache=cache, use_cache=True, **deepstack_inputs)
            logits = ref.model.lm_head(out.last_hidden_state).float().numpy()
        if result["logits"].shape[1] == 1:  # trimmed prefill logits: the last position only
            logits = logits[:, -1:]
        report["prefill" if is_prefill else f"decode.{step}"] = maxdiff(result["logits"], logits)
    return report
