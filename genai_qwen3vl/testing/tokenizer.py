"""The tiny checkpoints' tokenizer: a small byte-level BPE trained on the spot, with Qwen2's
pre-tokenizer split and Qwen's special and added tokens in Qwen's order."""

from __future__ import annotations

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
QWEN_SPLIT_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# Qwen3.5's: combining marks (\p{M}) join the letters around them (transformers' Qwen3_5Tokenizer)
QWEN3_5_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

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


def train_tokenizer(added_tokens: tuple[str, ...] = (), split_regex: str = QWEN_SPLIT_REGEX):
    """A small byte-level BPE tokenizer with Qwen's pre-tokenizer (``split_regex``) and special
    tokens (and ``added_tokens`` after Qwen's plain added tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
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


def hf_tokenizer(added_tokens: tuple[str, ...] = (), split_regex: str = QWEN_SPLIT_REGEX):
    """``train_tokenizer``'s tokenizer as transformers' fast tokenizer, with Qwen's eos and pad tokens."""
    from transformers import PreTrainedTokenizerFast

    tok = train_tokenizer(added_tokens, split_regex)
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
