"""Reading parts of a checkpoint's safetensors without loading the rest, and checking, from the
files' headers alone, that they hold every tensor the config asks for, with its shape."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from pathlib import Path
from typing import Iterator

from ..errors import CheckpointError
from ..model.spec import Qwen3VLSpec, checkpoint_file

_LFS_POINTER = b"version https://git-lfs"
# safetensors' own limit on a header (its MAX_HEADER_SIZE)
MAX_HEADER_BYTES = 100_000_000
# bytes per element of the dtypes a safetensors header may name
_DTYPE_BYTES = dict(F64=8, F32=4, F16=2, BF16=2, I64=8, I32=4, I16=2, I8=1, U8=1, BOOL=1, F8_E4M3=1, F8_E5M2=1, U16=2, U32=4, U64=8)
# what the export reads: float weights (quantized checkpoints, FP8 ones among them, are not)
FLOAT_DTYPES = ("F32", "F16", "BF16")


@dataclasses.dataclass(frozen=True)
class TensorHeader:
    dtype: str
    shape: tuple[int, ...]


def safetensors_files(checkpoint_dir: str | Path, contained: bool = True) -> dict[str, Path]:
    """Map every tensor name to the safetensors file holding it; clear errors for missing files
    and for names that lead outside the checkpoint folder (``contained=False`` only for our own
    text-only view of a checkpoint, whose links lead into the checkpoint checked before)."""
    root = Path(checkpoint_dir)

    def file(name: str) -> Path:
        return checkpoint_file(root, name) if contained else root / name

    index = file("model.safetensors.index.json")
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, RecursionError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index ({type(exc).__name__}); re-download it") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index} weight_map must map tensor names to file names; re-download it")
        shards = {fname: file(fname) for fname in sorted(set(weight_map.values()))}
        for fpath in shards.values():
            if not fpath.is_file():
                raise CheckpointError(f"{fpath} is listed in {index.name} but missing; finish the download")
        return {name: shards[fname] for name, fname in weight_map.items()}
    single = file("model.safetensors")
    if single.is_file():
        return {name: single for name in read_header(single)}
    found = sorted(p.name for p in root.glob("*.bin")) + sorted(p.name for p in root.glob("*.pt"))
    hint = f" (found {', '.join(found)}: convert it to safetensors)" if found else ""
    raise CheckpointError(f"{root} has no model.safetensors or model.safetensors.index.json{hint}")


def verify_weights(checkpoint_dir: str | Path, spec: Qwen3VLSpec | None = None) -> int:
    """Check every safetensors file is present and whole, from its header alone (no weights
    are read): a file shorter than its header says (an interrupted download) or a Git LFS
    pointer is named with the fix. With ``spec``, also check that the files hold every tensor
    the config asks for, with its shape, and none it does not (``check_tensors``). Returns the
    total size in bytes."""
    files = safetensors_files(checkpoint_dir)
    headers: dict[Path, dict[str, TensorHeader]] = {fpath: read_header(fpath) for fpath in sorted(set(files.values()))}
    tensors: dict[str, TensorHeader] = {}
    for name, fpath in files.items():
        if name not in headers[fpath]:
            raise CheckpointError(
                f"model.safetensors.index.json puts {name} in {fpath.name}, which does not hold it; re-download the checkpoint"
            )
        tensors[name] = headers[fpath][name]
    if spec is not None:
        check_tensors(spec, tensors, Path(checkpoint_dir))
    return sum(fpath.stat().st_size for fpath in headers)


def read_header(fpath: Path) -> dict[str, TensorHeader]:
    """The tensors a safetensors file declares, checked against the file's size: a truncated
    file, a header that is no safetensors header, or a Git LFS pointer is one CheckpointError."""
    size = fpath.stat().st_size
    _refuse_lfs_pointer(fpath)
    fix = "re-download it"
    with open(fpath, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{fpath} is truncated ({size} bytes); {fix}")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise CheckpointError(f"{fpath} is truncated or not a safetensors file (header of {header_len} bytes, file of {size}); {fix}")
        if header_len > MAX_HEADER_BYTES:
            raise CheckpointError(f"{fpath} declares a header of {header_len} bytes, more than safetensors allows; {fix}")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise CheckpointError(f"{fpath} has an unreadable safetensors header; {fix}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{fpath} has an unreadable safetensors header; {fix}")
    data_bytes = size - 8 - header_len
    out: dict[str, TensorHeader] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = dtype in _DTYPE_BYTES and all(type(x) is int and x >= 0 for x in (*shape, begin, end))
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok or end - begin != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise CheckpointError(f"{fpath} has a malformed header entry for {name[:200]}; {fix}")
        if end > data_bytes:
            raise CheckpointError(f"{fpath} is truncated: {size} bytes where its header needs {8 + header_len + end}; {fix}")
        out[name] = TensorHeader(dtype, tuple(shape))
    return out


def expected_tensors(
    spec: Qwen3VLSpec, text: str, vision: str, per_expert: bool = False
) -> Iterator[tuple[str, tuple[tuple[int, ...], ...]]]:
    """(name, accepted shapes) of every tensor the config asks for: the vision tower under the
    ``vision`` prefix, the token embedding, every text layer (its dense MLP or its experts) and
    the final norm under the ``text`` prefix (``model.language_model.`` on the hub); ``per_expert``:
    the experts as one tensor per expert (``ExpertLayers.per_expert``) rather than stacked. The LM head
    (``lm_head.weight``) is not among them: ``check_tensors`` asks for it unless it is tied.
    transformers' own model has exactly these parameters (tests/export/test_hostile_checkpoints.py)."""
    t, v, arch = spec.text, spec.vision, spec.architecture
    h, hd = t.hidden_size, t.head_dim
    yield f"{text}embed_tokens.weight", ((t.vocab_size, h),)
    q, kv = t.num_attention_heads * hd, t.num_key_value_heads * hd
    # Qwen3.5's gated attention: q_proj also writes each head's output gate
    gated = 2 if arch.linear_attention else 1
    attn = {"q": (gated * q, h), "k": (kv, h), "v": (kv, h), "o": (h, q)}
    linear = set(t.linear_attention_layers)
    for i in range(t.num_hidden_layers):
        layer = f"{text}layers.{i}."
        yield f"{layer}input_layernorm.weight", ((h,),)
        yield f"{layer}post_attention_layernorm.weight", ((h,),)
        if i in linear:
            yield from _linear_attention_tensors(f"{layer}linear_attn.", t)
        else:
            for p, shape in attn.items():
                yield f"{layer}self_attn.{p}_proj.weight", (shape,)
                if t.attention_bias:
                    yield f"{layer}self_attn.{p}_proj.bias", ((shape[0],),)
            yield f"{layer}self_attn.q_norm.weight", ((hd,),)
            yield f"{layer}self_attn.k_norm.weight", ((hd,),)
        e = t.experts
        if e is not None and arch.experts is not None and e.is_expert_layer(i):
            yield from _expert_tensors(arch.experts, e, i, h, per_expert)
        else:
            yield f"{layer}mlp.gate_proj.weight", ((t.intermediate_size, h),)
            yield f"{layer}mlp.up_proj.weight", ((t.intermediate_size, h),)
            yield f"{layer}mlp.down_proj.weight", ((h, t.intermediate_size),)
    yield f"{text}norm.weight", ((h,),)

    vh, merged = v.hidden_size, v.hidden_size * v.spatial_merge_size**2

    def linear(name: str, out: int, inner: int):
        yield f"{name}.weight", ((out, inner),)
        yield f"{name}.bias", ((out,),)

    def norm(name: str, width: int):
        yield f"{name}.weight", ((width,),)
        yield f"{name}.bias", ((width,),)

    yield f"{vision}patch_embed.proj.weight", ((vh, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size),)
    yield f"{vision}patch_embed.proj.bias", ((vh,),)
    yield f"{vision}pos_embed.weight", ((v.num_position_embeddings, vh),)
    for j in range(v.depth):
        block = f"{vision}blocks.{j}."
        yield from norm(f"{block}norm1", vh)
        yield from norm(f"{block}norm2", vh)
        yield from linear(f"{block}attn.qkv", 3 * vh, vh)
        yield from linear(f"{block}attn.proj", vh, vh)
        yield from linear(f"{block}mlp.linear_fc1", v.intermediate_size, vh)
        yield from linear(f"{block}mlp.linear_fc2", vh, v.intermediate_size)
    # the main merger normalizes before the patches are merged, the DeepStack ones after
    for merger, width in ((f"{vision}merger", vh), *((f"{vision}deepstack_merger_list.{k}", merged) for k in range(spec.num_deepstack))):
        yield from norm(f"{merger}.norm", width)
        yield from linear(f"{merger}.linear_fc1", merged, merged)
        yield from linear(f"{merger}.linear_fc2", v.out_hidden_size, merged)


def _expert_tensors(layout, e, i: int, h: int, per_expert: bool) -> Iterator[tuple[str, tuple[tuple[int, ...], ...]]]:
    """One expert layer's tensors: the experts (stacked, or one per expert), the router and the
    shared expert where the architecture has one."""
    n, w = e.num_experts, e.intermediate_size
    if per_expert:
        for j in range(n):
            for p, shape in (("gate", (w, h)), ("up", (w, h)), ("down", (h, w))):
                yield layout.per_expert.format(i=i, j=j, p=p), (shape,)
    else:
        # transformers' layout [E, 2I, H] / [E, H, I], or, where the hub holds them so, transposed
        flip = layout.hub_transposed
        yield layout.gate_up.format(i=i), ((n, 2 * w, h), (n, h, 2 * w)) if flip else ((n, 2 * w, h),)
        yield layout.down.format(i=i), ((n, h, w), (n, w, h)) if flip else ((n, h, w),)
    yield layout.router.format(i=i), ((n, h),)
    if layout.shared_expert is not None:
        s = e.shared_intermediate_size
        for p, shape in (("gate", (s, h)), ("up", (s, h)), ("down", (h, s))):
            yield layout.shared_expert.format(i=i, p=p), (shape,)
        yield layout.shared_expert_gate.format(i=i), ((1, h),)


def _linear_attention_tensors(prefix: str, t) -> Iterator[tuple[str, tuple[tuple[int, ...], ...]]]:
    """A Qwen3.5 linear-attention layer's tensors (transformers' Qwen3_5GatedDeltaNet)."""
    lin, h = t.linear, t.hidden_size
    values = lin.num_value_heads * lin.value_head_dim
    yield f"{prefix}in_proj_qkv.weight", ((lin.conv_dim, h),)
    yield f"{prefix}in_proj_z.weight", ((values, h),)
    yield f"{prefix}in_proj_b.weight", ((lin.num_value_heads, h),)
    yield f"{prefix}in_proj_a.weight", ((lin.num_value_heads, h),)
    yield f"{prefix}conv1d.weight", ((lin.conv_dim, 1, lin.conv_kernel),)
    yield f"{prefix}dt_bias", ((lin.num_value_heads,),)
    yield f"{prefix}A_log", ((lin.num_value_heads,),)
    yield f"{prefix}norm.weight", ((lin.value_head_dim,),)
    yield f"{prefix}out_proj.weight", ((h, values),)


def check_tensors(spec: Qwen3VLSpec, tensors: dict[str, TensorHeader], checkpoint_dir: Path) -> None:
    """The safetensors headers against the config: every tensor it asks for is there, with one of
    its accepted shapes and a float dtype; no tensor of the vision tower, the text model or the LM
    head is left over (weights of more layers than the config declares). A CheckpointError names
    the first problem, before anything is built from the config."""
    arch = spec.architecture
    vision = next((p for p in arch.vision_weight_prefixes if any(k.startswith(p) for k in tensors)), arch.vision_weight_prefixes[0])
    embedding = next((p for p in arch.embedding_weight_prefixes if p + "weight" in tensors), arch.embedding_weight_prefixes[0])
    text = embedding[: -len("embed_tokens.")]
    layout, e = arch.experts, spec.text.experts
    per_expert = (
        layout is not None
        and layout.per_expert is not None
        and e is not None
        and any(layout.per_expert.format(i=i, j=0, p="gate") in tensors for i in e.expert_layers(spec.text.num_hidden_layers))
    )
    expected = dict(expected_tensors(spec, text, vision, per_expert))
    head = ((spec.text.vocab_size, spec.text.hidden_size),)
    if not spec.tie_word_embeddings or "lm_head.weight" in tensors:  # tied: the head may be stored all the same
        expected["lm_head.weight"] = head
    belongs = "check that config.json belongs to these weights"
    missing = [name for name in expected if name not in tensors]
    if missing:
        raise CheckpointError(
            f"{checkpoint_dir} lacks {len(missing)} tensor{'s' if len(missing) > 1 else ''} config.json asks for "
            f"({', '.join(missing[:2])}{', ...' if len(missing) > 2 else ''}); re-download it, or {belongs}"
        )
    for name, shapes in expected.items():
        found = tensors[name]
        if found.shape not in shapes:
            wanted = " or ".join(str(list(s)) for s in shapes)
            raise CheckpointError(f"{name} has shape {list(found.shape)} where config.json asks for {wanted}; {belongs}")
        if found.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{name} is stored as {found.dtype}; this tool exports float checkpoints ({', '.join(FLOAT_DTYPES)}): "
                "use the unquantized checkpoint"
            )
    ours = (text, vision, "lm_head.")
    extra = sorted(n for n in tensors if n.startswith(ours) and n not in expected and not n.endswith(".inv_freq"))
    if extra:
        raise CheckpointError(
            f"{checkpoint_dir} holds {len(extra)} tensor{'s' if len(extra) > 1 else ''} config.json does not ask for "
            f"({', '.join(extra[:2])}{', ...' if len(extra) > 2 else ''}): a config with fewer layers or blocks than "
            f"the weights would export a different model; {belongs}"
        )


def _refuse_lfs_pointer(path: Path) -> None:
    with open(path, "rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise CheckpointError(f"{path} is a Git LFS pointer, not the weights; run `git lfs pull` in {path.parent}")


def load_submodule_state(checkpoint_dir: str | Path, prefixes: tuple[str, ...], dtype) -> dict:
    """Load only the tensors under the first of ``prefixes`` present, with the prefix removed."""
    from safetensors import SafetensorError, safe_open

    files = safetensors_files(checkpoint_dir)
    prefix = next((p for p in prefixes if any(k.startswith(p) for k in files)), None)
    if prefix is None:
        raise CheckpointError(f"no tensors named {' or '.join(p + '*' for p in prefixes)} in {checkpoint_dir}")
    by_file: dict[Path, list[str]] = {}
    for name, fpath in files.items():
        if name.startswith(prefix):
            by_file.setdefault(fpath, []).append(name)
    state = {}
    for fpath, names in by_file.items():
        try:
            with safe_open(str(fpath), framework="pt") as f:
                for name in names:
                    state[name[len(prefix) :]] = f.get_tensor(name).to(dtype)
        except SafetensorError as exc:  # a truncated or corrupt file
            raise CheckpointError(f"{fpath} cannot be read ({exc}); it is truncated or corrupt, re-download it") from None
    return state
