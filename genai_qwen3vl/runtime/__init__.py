"""What runs an exported folder: exact transformers preprocessing for the stock og Generator
(``Qwen3VLProcessor``), the generation loop (``TokenStream``), structured output (``Constraint``),
the chat sample. onnxruntime-genai, numpy, pillow, tokenizers, jinja2, llguidance, jsonschema
(PyAV for video files); never torch or transformers (a test enforces it)."""


def __getattr__(name):
    # lazy: importing the package stays light
    if name == "Qwen3VLProcessor":
        from .processor import Qwen3VLProcessor

        return Qwen3VLProcessor
    if name == "TokenStream":
        from .generate import TokenStream

        return TokenStream
    if name in ("Constraint", "ConstraintError"):
        from . import constraints

        return getattr(constraints, name)
    raise AttributeError(name)


__all__ = ["Constraint", "ConstraintError", "Qwen3VLProcessor", "TokenStream"]
