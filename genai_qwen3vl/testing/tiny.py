"""Tiny random Qwen3-VL checkpoints, built locally and seeded.

Used by the tests, the built-in demo and the benchmarks (no model hub is needed). A checkpoint written
here has the same files a real Hugging Face Qwen3-VL checkpoint has: ``config.json``,
``generation_config.json``, ``model.safetensors``, a byte-level BPE ``tokenizer.json`` with
Qwen's special tokens (trained on the spot), ``tokenizer_config.json``, the chat template,
``preprocessor_config.json`` and ``video_preprocessor_config.json``.

The presets use awkward dimensions on purpose: ``heads * head_dim != hidden``, GQA,
uneven ``mrope_section``, adjacent and non-adjacent DeepStack indexes, tied and untied
embeddings. Their chat template follows Qwen3-VL-Instruct's (tools, tool calls, tool responses);
a preset may take Qwen3-VL-Thinking's instead. ``MOE_PRESETS`` are Qwen3-VL-MoE checkpoints
(``Qwen3VLMoeForConditionalGeneration``): experts and top-k of several sizes, dense layers among
the expert layers, expert tensors in transformers' layout or transposed as the hub files hold them.

``make_scripted_checkpoint`` writes a checkpoint whose greedy answer is known in advance
(SCRIPTED_OUTPUT: reasoning, ``</think>``, a tool call), for tests of a server.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Mapping

# Qwen's special tokens, in Qwen's order (they follow the BPE vocabulary, as in Qwen).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Not special in Qwen (they are plain added tokens).
ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>")

# Qwen2's pre-tokenizer split (the same regex Qwen ships in its tokenizer.json).
QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3-VL's chat templates, written here after the structure of the published ones (Instruct and
# Thinking): the system message (text or text parts) on top, the tool signatures in it when `tools`
# are given, images and videos as `<|vision_start|><|image_pad|><|vision_end|>` and
# `<|vision_start|><|video_pad|><|vision_end|>` ("Picture n: " / "Video n: " before them with
# `add_vision_id`), assistant tool calls as <tool_call> JSON, consecutive `tool` messages in one user
# turn of <tool_response> blocks. Rendered as transformers renders them (trim_blocks, lstrip_blocks).
# The two differ at the two marked lines (see _qwen3_vl_template).
_QWEN3_VL_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" }}
    {{- "You are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within " }}
    {{- "<tool_call></tool_call> XML tags:\n<tool_call>\n" }}
    {{- "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].content is string %}
        {{- messages[0].content }}
    {%- else %}
        {%- for content in messages[0].content %}
            {%- if 'text' in content %}
                {{- content.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\n' }}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set text = namespace(value='') %}
        {%- if message.content is string %}
            {%- set text.value = message.content %}
        {%- elif message.content %}
            {%- for content in message.content %}
                {%- if 'text' in content %}
                    {%- set text.value = text.value + content.text %}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {#- REASONING #}
        {{- '<|im_start|>' + message.role + '\n' + text.value }}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and text.value) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or (messages[loop.index0 - 1].role != 'tool') %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {#- GENERATION PROMPT #}
{%- endif %}
"""

# Thinking: an earlier answer keeps only what follows its reasoning (split, not `'</think>' in
# text`: og 0.18's template engine answers False to a substring test)
_DROP_REASONING = r"""        {%- set parts = text.value.split('</think>') %}
        {%- if parts | length > 1 %}
            {%- set text.value = parts[-1].lstrip('\n') %}
        {%- endif %}
"""
_INSTRUCT_PROMPT = r"""    {{- '<|im_start|>assistant\n' }}
"""
# Thinking: the answer opens with "<think>\n"; Qwen3's `enable_thinking=False` closes it at once
_THINKING_PROMPT = r"""    {{- '<|im_start|>assistant\n<think>\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '\n</think>\n\n' }}
    {%- endif %}
"""


def _qwen3_vl_template(reasoning: str, generation_prompt: str) -> str:
    marks = {"        {#- REASONING #}\n": reasoning, "    {#- GENERATION PROMPT #}\n": generation_prompt}
    template = _QWEN3_VL_TEMPLATE
    for mark, text in marks.items():
        assert template.count(mark) == 1, mark
        template = template.replace(mark, text)
    return template


CHAT_TEMPLATE = _qwen3_vl_template("", _INSTRUCT_PROMPT)
THINKING_CHAT_TEMPLATE = _qwen3_vl_template(_DROP_REASONING, _THINKING_PROMPT)
CHAT_TEMPLATES = {"instruct": CHAT_TEMPLATE, "thinking": THINKING_CHAT_TEMPLATE}

_CORPUS = """
The quick brown fox jumps over the lazy dog. Describe this image in detail.
What is in the picture? There is a red square, a blue circle and a green line.
You are a helpful assistant. Answer the question about the images below.
Compare the two pictures and tell me what differs between them.
How many objects are there? Count the cats, the dogs and the birds.
A photo of a city street at night, with cars, lights and people walking.
The chart shows sales rising from 2019 to 2024, then falling in 2025.
Read the text in the sign: OPEN 24 HOURS. What colour is the sky?
Video: a person walks into the room, picks up a cup and leaves.
Hello, world! 1234567890 + - * / = ( ) [ ] { } < > , . ; : ' " ? !
user assistant system image video picture frame second seconds
"""


@dataclasses.dataclass(frozen=True)
class TinyPreset:
    """One tiny checkpoint: its text and vision config values (transformers' names, passed to
    ``Qwen3VLConfig`` as they are; ``mrope_section`` goes into ``rope_parameters``) and its image
    processor's pixel limits (size.shortest_edge, size.longest_edge)."""

    name: str
    text: Mapping[str, Any]
    vision: Mapping[str, Any]
    pixels: tuple[int, int]
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    extra_vocab: int = 0  # model vocab rows beyond the tokenizer's (Qwen pads its vocab too)
    # multipliers of the random MLP down_proj and attention o_proj weights (see _randomize_)
    gains: tuple[float, float] = (1.0, 1.0)
    rope_theta: float = 5_000_000.0
    # Write it as Qwen's published checkpoints are: bf16 weights in several shards and a
    # config.json in the transformers-4.57 layout (rope_scaling + rope_theta).
    hub_layout: bool = False
    chat_template: str = "instruct"  # a key of CHAT_TEMPLATES
    # more plain added tokens for this checkpoint's tokenizer, after ADDED_TOKENS (ids follow theirs)
    added_tokens: tuple[str, ...] = ()
    # Qwen3-VL-MoE: the text config's expert values (num_experts, num_experts_per_tok,
    # moe_intermediate_size, decoder_sparse_step, mlp_only_layers); None for dense Qwen3-VL
    moe: Mapping[str, Any] | None = None
    # multiplier of the random router weights: larger gives sharper (more decided) routing
    router_gain: float = 1.0

    @property
    def hf_class(self) -> str:
        return "Qwen3VLMoeForConditionalGeneration" if self.moe else "Qwen3VLForConditionalGeneration"

    def __post_init__(self):
        if self.chat_template not in CHAT_TEMPLATES:
            raise ValueError(f"chat_template must be one of {sorted(CHAT_TEMPLATES)}, got {self.chat_template!r}")

    @property
    def tie_word_embeddings(self) -> bool:
        return bool(self.text["tie_word_embeddings"])


def _text(hidden, heads, kv_heads, head_dim, mlp, layers, mrope, tied) -> dict[str, Any]:
    return dict(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                intermediate_size=mlp, num_hidden_layers=layers, mrope_section=mrope, tie_word_embeddings=tied)


def _moe(experts, top_k, width, sparse_step=1, mlp_only=()) -> dict[str, Any]:
    return dict(num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=width,
                decoder_sparse_step=sparse_step, mlp_only_layers=list(mlp_only))


def _vision(hidden, heads, mlp, depth, deepstack, positions) -> dict[str, Any]:
    return dict(hidden_size=hidden, num_heads=heads, intermediate_size=mlp, depth=depth,
                deepstack_visual_indexes=deepstack, num_position_embeddings=positions)


_CLIP = dict(image_mean=(0.48145466, 0.4578275, 0.40821073), image_std=(0.26862954, 0.26130258, 0.27577711))
_PATCHES = 16 * 16 * 4  # pixels per merged patch (one image token)

PRESETS: dict[str, TinyPreset] = {
    p.name: p
    for p in (
        # non-adjacent deepstack (K=2), GQA 6/2, heads*head_dim (96) != hidden (40), untied
        TinyPreset("awkward", _text(40, 6, 2, 16, 72, 4, (3, 3, 2), False), _vision(48, 3, 80, 4, (0, 2), 64),
                   (_PATCHES * 6, _PATCHES * 40), extra_vocab=37, **_CLIP),
        # adjacent deepstack (K=3, as in every released size), tied embeddings (2B/4B), MHA, hub layout
        TinyPreset("tied", _text(64, 4, 4, 24, 96, 5, (4, 4, 4), True), _vision(32, 2, 64, 5, (1, 2, 3), 36),
                   (_PATCHES * 4, _PATCHES * 30), hub_layout=True, gains=(6.0, 0.5)),
        # deeper and wider: 8 layers, GQA 8/2, DeepStack K=3 spread over a 6-block vision tower,
        # a 24x24 position table, Qwen's real min_pixels (every image >= 64 tokens)
        TinyPreset("deep", _text(256, 8, 2, 48, 704, 8, (8, 8, 8), False), _vision(128, 4, 320, 6, (1, 3, 5), 576),
                   (65536, _PATCHES * 256), extra_vocab=100, gains=(6.0, 0.5)),
        # real Qwen3-VL pixel limits and the released mrope_section proportions
        TinyPreset("real_limits", _text(48, 4, 2, 32, 64, 3, (6, 5, 5), True), _vision(32, 2, 48, 3, (0, 1, 2), 2304),
                   (65536, 16777216), gains=(4.0, 0.5)),
    )
}

# Qwen3-VL-MoE. Expert widths avoid H == 2I and H == I (where transformers' layout and the hub's
# transposed one have the same shape and cannot be told apart, as in transformers itself).
MOE_PRESETS: dict[str, TinyPreset] = {
    p.name: p
    for p in (
        # 8 experts top-2 of 40 (K % 32 != 0 in both expert MatMuls), layer 2 of 4 dense
        # (mlp_only_layers), GQA 6/2, heads*head_dim != hidden, non-adjacent DeepStack (0, 2), untied
        TinyPreset("moe", _text(48, 6, 2, 16, 72, 4, (3, 3, 2), False), _vision(48, 3, 80, 4, (0, 2), 64),
                   (_PATCHES * 6, _PATCHES * 40), extra_vocab=21, moe=_moe(8, 2, 40, mlp_only=(2,)), **_CLIP),
        # 6 experts top-3 of 32 on every second layer (decoder_sparse_step 2), layer 5 dense all the
        # same (mlp_only_layers): experts on layers 1 and 3, so DeepStack (K=3) feeds dense and expert
        # layers; tied embeddings; written as Qwen's hub checkpoints are, expert tensors transposed;
        # hidden 128 (heads*head_dim 96): onnxruntime's CUDA 4-bit QMoE needs a multiple of 64
        TinyPreset("moe_hub", _text(128, 4, 2, 24, 80, 6, (4, 4, 4), True), _vision(32, 2, 64, 5, (1, 3, 4), 36),
                   (_PATCHES * 4, _PATCHES * 30), hub_layout=True, gains=(4.0, 0.5),
                   moe=_moe(6, 3, 32, sparse_step=2, mlp_only=(5,)), router_gain=2.0),
    )
}
ALL_TINY_PRESETS: dict[str, TinyPreset] = {**PRESETS, **MOE_PRESETS}

# The scripted checkpoint (``make_scripted_checkpoint``): after any prompt that ends with the
# Thinking generation prompt (``<|im_start|>assistant\n<think>\n``) its greedy answer is
# SCRIPTED_OUTPUT, then <|im_end|>: reasoning, the end of thinking, one tool call, as Qwen3-VL
# Thinking answers when it calls a tool.
SCRIPTED_REASONING = "The user asks for the weather in Paris."
SCRIPTED_TOOL_JSON = '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
# one token each: the chain of tokens the model follows after the prompt's last "\n"
SCRIPTED_PIECES = (SCRIPTED_REASONING, "</think>", "\n\n", "<tool_call>", SCRIPTED_TOOL_JSON, "</tool_call>")
SCRIPTED_OUTPUT = "".join(SCRIPTED_PIECES)
# the awkward preset (untied), the Thinking template, and the pieces the small BPE has no token
# for as plain added tokens of this checkpoint's tokenizer only
SCRIPTED_PRESET = dataclasses.replace(
    PRESETS["awkward"],
    name="scripted",
    text={**PRESETS["awkward"].text, "tie_word_embeddings": False},
    chat_template="thinking",
    added_tokens=(SCRIPTED_REASONING, "\n\n", SCRIPTED_TOOL_JSON),
)
# the logit of the scripted next token; every other token's is 0 (to rounding), so sampling at
# any usual temperature follows the script too
SCRIPTED_LOGIT = 30.0


def train_tokenizer(added_tokens: tuple[str, ...] = ()):
    """A small byte-level BPE tokenizer with Qwen's pre-tokenizer and special tokens (and
    ``added_tokens`` after Qwen's plain added tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([line for line in _CORPUS.splitlines() if line.strip()] * 4, trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.add_tokens(list(ADDED_TOKENS) + list(added_tokens))
    return tok


def _hf_tokenizer(added_tokens: tuple[str, ...] = ()):
    from transformers import PreTrainedTokenizerFast

    tok = train_tokenizer(added_tokens)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=32768,
    )
    return hf


def build_config(preset: TinyPreset, vocab_size: int, token_ids: dict[str, int]):
    import transformers

    text = {**preset.text, **(preset.moe or {})}
    mrope = text.pop("mrope_section")
    text.update(
        vocab_size=vocab_size,
        hidden_act="silu",
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": preset.rope_theta, "mrope_section": list(mrope), "mrope_interleaved": True},
        attention_bias=False,
        bos_token_id=token_ids["<|endoftext|>"],
        eos_token_id=token_ids["<|im_end|>"],
    )
    vision = dict(preset.vision)
    vision.update(
        deepstack_visual_indexes=list(vision["deepstack_visual_indexes"]),
        hidden_act="gelu_pytorch_tanh",
        in_channels=3,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=text["hidden_size"],
    )
    config_class = transformers.Qwen3VLMoeConfig if preset.moe else transformers.Qwen3VLConfig
    return config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=preset.tie_word_embeddings,
    )


def _randomize_(model, seed: int, gains: tuple[float, float] = (1.0, 1.0), router_gain: float = 1.0) -> None:
    """Give every parameter a seeded value with a scale that keeps activations O(1).

    HF's init gives tiny weights (std 0.02) and unit norms, so logits barely depend on the
    input and parity tests could pass on a model that ignores images. Larger, varied weights
    (norm gains included) make every path matter.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.ndim >= 2:
                # experts are stacked [E, out, in]: their fan-in is the last axis
                fan_in = param.shape[-1] if ".experts." in name else param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) / fan_in**0.5)
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.1)
            else:  # norm gains
                param.copy_(1.0 + torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.2)
        # the token embedding is a lookup table, not a projection: unit-scale rows
        emb = model.model.language_model.embed_tokens.weight
        emb.copy_(torch.randn(emb.shape, generator=gen, dtype=emb.dtype))
        # Greedy decoding from random weights tends to repeat one token: with tied embeddings the
        # input token's own row dominates the residual stream and the logits, and after an image
        # attention's average over the many image tokens dominates. Each preset's gains on the
        # MLP output (a different function of each token) and the attention output are chosen so
        # that its greedy runs vary (the parity tests assert a minimum of distinct tokens): with
        # the gains below, 5 to 16 distinct tokens in 16 greedy steps over 16 prompts (text, one
        # to three pictures of every resize branch, multi-turn, videos), where plain weights gave
        # 1 to 3 after pictures on three of the four presets.
        for name, param in model.model.language_model.named_parameters():
            if name.endswith(("down_proj.weight", "experts.down_proj")):
                param.mul_(gains[0])
            elif name.endswith("o_proj.weight"):
                param.mul_(gains[1])
            elif name.endswith("mlp.gate.weight"):  # a MoE router
                param.mul_(router_gain)
        if model.config.tie_word_embeddings:
            emb.mul_(0.3)  # tied: a smaller table weakens the token's own row
        else:
            lm = model.lm_head.weight
            lm.copy_(torch.randn(lm.shape, generator=gen, dtype=lm.dtype) / lm.shape[1] ** 0.5)


def make_tiny_checkpoint(
    out_dir: str | Path, preset: str | TinyPreset = "awkward", seed: int = 0, shard_size: str = "300KB"
) -> Path:
    """Write a tiny random Qwen3-VL (or, for a MoE preset, Qwen3-VL-MoE) checkpoint folder;
    returns its path."""
    return _write_checkpoint(out_dir, preset, seed, shard_size)


def _write_checkpoint(out_dir, preset, seed: int, shard_size: str = "300KB", set_weights=None) -> Path:
    """``make_tiny_checkpoint``; ``set_weights(model, tokenizer)``, given, edits the seeded random
    weights before they are saved."""
    import torch
    import transformers

    preset = ALL_TINY_PRESETS[preset] if isinstance(preset, str) else preset
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = _hf_tokenizer(preset.added_tokens)
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab_size = len(tokenizer) + preset.extra_vocab
    config = build_config(preset, vocab_size, token_ids)

    torch.manual_seed(seed)
    dtype = torch.bfloat16 if preset.hub_layout else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build large checkpoints in their saved dtype: half the memory
    try:
        model = getattr(transformers, preset.hf_class)(config).eval()
    finally:
        torch.set_default_dtype(previous)
    _randomize_(model, seed, preset.gains, preset.router_gain)
    if set_weights is not None:
        set_weights(model, tokenizer)
    if preset.tie_word_embeddings:
        model.tie_weights()
    if preset.hub_layout:
        model.save_pretrained(out, max_shard_size=shard_size)
        _to_hub_config_layout(out / "config.json")
        if preset.moe:
            _to_hub_expert_layout(out)
    else:
        model.save_pretrained(out)
    del model

    generation = {
        "bos_token_id": token_ids["<|endoftext|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
        "do_sample": True,
        "eos_token_id": [token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
        "top_k": 20,
        "top_p": 0.8,
        "repetition_penalty": 1.0,
        "temperature": 0.7,
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")

    _write_processor_files(out, tokenizer, preset)
    return out


def _to_hub_config_layout(path: Path) -> None:
    """Rewrite a transformers-5 config.json the way Qwen's hub configs are written (4.57)."""
    cfg = json.loads(path.read_text())
    text = cfg["text_config"]
    rope = text.pop("rope_parameters")
    text["rope_theta"] = rope.pop("rope_theta")
    text["rope_scaling"] = rope
    text["dtype"] = "bfloat16"
    cfg.pop("dtype", None)
    cfg["vision_config"]["model_type"] = cfg["model_type"]
    cfg["vision_config"].pop("rope_parameters", None)
    cfg["transformers_version"] = "4.57.0.dev0"
    path.write_text(json.dumps(cfg, indent=2) + "\n")


def _to_hub_expert_layout(out: Path) -> None:
    """Transpose the stacked expert tensors as Qwen's hub files hold them: ``gate_up_proj``
    [E, H, 2I] and ``down_proj`` [E, I, H] (transformers 5 keeps [E, 2I, H] and [E, H, I] in memory,
    transposes on load and writes its own layout on save). One shard at a time."""
    from safetensors.torch import load_file, save_file

    for shard in sorted(out.glob("*.safetensors")):
        tensors = load_file(str(shard))
        if any(name.endswith(("experts.gate_up_proj", "experts.down_proj")) for name in tensors):
            for name in tensors:
                if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                    tensors[name] = tensors[name].transpose(1, 2).contiguous()
            save_file(tensors, str(shard), metadata={"format": "pt"})
        del tensors


def _write_processor_files(out: Path, tokenizer, preset: TinyPreset) -> None:
    """The tokenizer and processor files, laid out as Qwen's hub checkpoints have them."""
    tokenizer.save_pretrained(out)
    tok_cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg.update(tokenizer_class="Qwen2Tokenizer", errors="replace", add_prefix_space=False)
    tok_cfg.pop("backend", None)
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATES[preset.chat_template]}, indent=2) + "\n")
    common = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": list(preset.image_mean),
        "image_std": list(preset.image_std),
        "processor_class": "Qwen3VLProcessor",
    }
    image = {
        "size": {"longest_edge": preset.pixels[1], "shortest_edge": preset.pixels[0]},
        **common,
        "image_processor_type": "Qwen2VLImageProcessorFast",
    }
    video = {
        "size": {"longest_edge": preset.pixels[1] * 4, "shortest_edge": preset.pixels[0]},
        **common,
        "video_processor_type": "Qwen3VLVideoProcessor",
    }
    (out / "preprocessor_config.json").write_text(json.dumps(image, indent=2) + "\n")
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2) + "\n")


def make_scripted_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """A real Qwen3-VL checkpoint (SCRIPTED_PRESET) whose greedy answer to any prompt ending with
    the Thinking generation prompt is SCRIPTED_OUTPUT, then <|im_end|> (see ``_script_weights_``)."""
    return _write_checkpoint(out_dir, SCRIPTED_PRESET, seed, set_weights=functools.partial(_script_weights_, seed=seed))


def scripted_token_ids(tokenizer) -> list[int]:
    """The chain: the prompt's last token ("\\n"), one token per SCRIPTED_PIECES, <|im_end|>;
    ``tokenizer`` is transformers' tokenizer of a scripted checkpoint."""
    ids = []
    for piece in ("\n", *SCRIPTED_PIECES):
        encoded = tokenizer.encode(piece, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"{piece!r} is {len(encoded)} tokens in this tokenizer, not one")
        ids.extend(encoded)
    ids.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    if len(set(ids)) != len(ids):
        raise ValueError(f"the scripted chain repeats a token: {ids}")
    return ids


def _script_weights_(model, tokenizer, seed: int) -> None:
    """Make the text decoder a bigram model that follows ``scripted_token_ids``.

    Every layer's attention ``o_proj`` and MLP ``down_proj`` are zero, so no layer adds anything
    to the residual stream (DeepStack adds only at image tokens), and the last hidden state is the
    final RMSNorm (gains set to 1) of the current token's embedding. The chain's tokens (8, fewer
    than the hidden size H) get orthonormal embedding rows e_i, so the normed state is sqrt(H)·e_i;
    ``lm_head`` loses every component along the e_i, and the row of the token after chain token i
    gains SCRIPTED_LOGIT/sqrt(H)·e_i: at chain token i the logits are SCRIPTED_LOGIT at the next
    token and 0 (to rounding) everywhere else, whatever came before. So any prompt ending with "\\n"
    gets the whole script, and one ending with the "\\n\\n" token (the Thinking prompt with
    ``enable_thinking=False``) gets its tool call part. The vision tower and the other tokens keep
    their random weights."""
    import torch

    ids = scripted_token_ids(tokenizer)
    text = model.model.language_model
    hidden = text.embed_tokens.weight.shape[1]
    if len(ids) > hidden:
        raise ValueError(f"the scripted chain has {len(ids)} tokens, more than the hidden size {hidden}")
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in text.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        text.norm.weight.fill_(1.0)
        basis, _ = torch.linalg.qr(torch.randn(hidden, len(ids), generator=gen, dtype=torch.float64))
        basis = basis.T  # [chain, hidden], orthonormal rows
        text.embed_tokens.weight[ids] = basis.to(text.embed_tokens.weight.dtype)
        head = model.lm_head.weight
        projected = head.double() - (head.double() @ basis.T) @ basis
        for i, nxt in enumerate(ids[1:]):
            projected[nxt] += SCRIPTED_LOGIT / hidden**0.5 * basis[i]
        head.copy_(projected.to(head.dtype))
