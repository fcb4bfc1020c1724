"""What runs an exported folder: exact transformers preprocessing for the stock og Generator
(``Qwen3VLProcessor``), the chat sample. onnxruntime-genai, numpy, pillow, tokenizers, jinja2
(PyAV for video files); never torch or transformers (a test enforces it)."""


def __getattr__(name):
    # lazy: importing the package stays light
    if name == "Qwen3VLProcessor":
        from .processor import Qwen3VLProcessor

        return Qwen3VLProcessor
    raise AttributeError(name)


__all__ = ["Qwen3VLProcessor"]
