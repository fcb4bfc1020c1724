"""Qwen3-VL for stock onnxruntime-genai, DeepStack included, checked against transformers.

Tiers (docs/design.md): ``model`` (what a checkpoint is), ``export``
(checkpoint -> folder), ``runtime`` (runs a folder; no torch), ``verify`` (against
transformers), ``testing`` (tiny random checkpoints).
"""

__version__ = "0.2.0"


def __getattr__(name):
    # lazy, so that `import genai_qwen3vl` stays light (no torch, no og)
    if name == "Qwen3VLProcessor":
        from .runtime.processor import Qwen3VLProcessor

        return Qwen3VLProcessor
    raise AttributeError(name)


__all__ = ["Qwen3VLProcessor"]
