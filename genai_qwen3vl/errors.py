"""Errors the user can act on. The CLI prints them as one line, without a traceback.

``Qwen3VLError`` is the base of all of them; under it each stage has its own: the export
(``Qwen3VLExportError``: checkpoint, options), the checks against transformers (``ParityError``,
``ReferenceStackError``), an exported folder (``FolderError``) and the upstream versions the
export's seam to og's and onnxruntime's internals was written for (``UpstreamVersionError``).
"""


class Qwen3VLError(Exception):
    """Base class: the message names the problem and the fix."""


class Qwen3VLExportError(Qwen3VLError):
    """The export cannot go on."""


class CheckpointError(Qwen3VLExportError):
    """The input checkpoint is missing, unsupported or inconsistent."""


class OptionsError(Qwen3VLExportError):
    """The command-line options ask for something this tool cannot do."""


class ParityError(Qwen3VLError):
    """An exported artifact differs from transformers beyond the tolerance."""


class ReferenceStackError(Qwen3VLError):
    """The installed transformers cannot serve as the reference for a check."""


class FolderError(Qwen3VLError, ValueError):
    """An exported folder is missing, or its genai_config.json or manifest.json is not what the
    export writes. A ValueError too: the runtime's callers catch that for bad input."""


class UpstreamVersionError(Qwen3VLExportError):
    """An installed onnxruntime-genai or onnxruntime is outside the versions whose private
    surface the export was written against (``export/og_compat.py``)."""


class InputError(Qwen3VLError, ValueError):
    """What a caller gave the runtime cannot be used; a ValueError too, what the runtime's callers catch for bad input."""


class ImageError(InputError):
    """An image is missing, cannot be decoded, or has a size, shape or dtype the processor refuses."""


class VideoError(InputError):
    """A video is missing or cannot be decoded here, or its frames or frame rates do not fit the processor."""


class PromptError(InputError):
    """A prompt's image or video markers do not match the media given, or it is longer than the model's context."""


class ServerError(Qwen3VLError, ValueError):
    """The server cannot start as asked: a flag, an environment variable, or a model the generation
    worker cannot load; a ValueError too, which ``genai-qwen3vl serve`` prints as one line."""


class SamplingError(InputError):
    """A sampling option (temperature, top_p, top_k, repetition_penalty, seed) is outside its range."""


class ClusterError(Qwen3VLError, ValueError):
    """Ray is not installed here, or its cluster cannot be reached or cannot run what was asked
    (one line: what to do)."""
