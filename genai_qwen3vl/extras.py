"""The optional extras (setup.py's ``export`` and ``verify``): which modules each brings, and the
one-line error naming the extra to install when a command needs one that is missing. Imports no
tier, so every command can check before it imports one."""

from __future__ import annotations

import importlib.util

from .errors import Qwen3VLError

# The modules each extra brings (setup.py's EXPORT and VERIFY lists; a test keeps them in step).
EXTRA_MODULES = {
    "export": ("torch", "transformers", "onnx", "onnxscript", "onnx_ir", "safetensors", "huggingface_hub"),
    "verify": ("torch", "transformers", "onnx", "onnxscript", "onnx_ir", "safetensors", "huggingface_hub", "torchvision", "av"),
}


class MissingExtraError(Qwen3VLError):
    """A command needs an extra that this installation lacks."""

    def __init__(self, extra: str, module: str, what: str):
        super().__init__(f'{what} needs the {extra} extra ({module} is not installed): pip install "genai-qwen3vl[{extra}]"')


def _absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a parent package that is missing, or a module without a spec
        return True


def require_extra(extra: str, what: str) -> None:
    """Raise MissingExtraError naming the first module of ``extra`` that is not installed."""
    for module in EXTRA_MODULES[extra]:
        if _absent(module):
            raise MissingExtraError(extra, module, what)


def missing_extra(exc: BaseException, what: str) -> MissingExtraError | None:
    """A MissingExtraError for an import of a module that is absent (not one that is installed but
    fails to import), naming the extra that brings it."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name or not _absent(name.split(".")[0]):
        return None
    top = name.split(".")[0]
    extra = next((e for e, modules in EXTRA_MODULES.items() if top in modules), None)
    return None if extra is None else MissingExtraError(extra, top, what)
