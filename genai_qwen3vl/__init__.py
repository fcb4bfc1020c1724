"""Export Hugging Face Qwen3-VL checkpoints for stock onnxruntime-genai, DeepStack included."""

__version__ = "0.1.0"


def __getattr__(name):
    # lazy, so that `import genai_qwen3vl` stays light (no torch, no og)
    if name == "Qwen3VLProcessor":
        from .processing import Qwen3VLProcessor

        return Qwen3VLProcessor
    raise AttributeError(name)


__all__ = ["Qwen3VLProcessor"]
