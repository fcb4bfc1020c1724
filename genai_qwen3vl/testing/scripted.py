"""The scripted checkpoint: a real Qwen3-VL checkpoint whose greedy answer is known in advance
(SCRIPTED_OUTPUT: reasoning, ``</think>``, a tool call), for tests of a server."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from .checkpoint import write_checkpoint
from .presets import PRESETS

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


def make_scripted_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """A real Qwen3-VL checkpoint (SCRIPTED_PRESET) whose greedy answer to any prompt ending with
    the Thinking generation prompt is SCRIPTED_OUTPUT, then <|im_end|> (see ``_script_weights_``)."""
    return write_checkpoint(out_dir, SCRIPTED_PRESET, seed, set_weights=functools.partial(_script_weights_, seed=seed))


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
