"""Errors the user can act on. The CLI prints them as one line, without a traceback."""


class Qwen3VLExportError(Exception):
    """Base class: the message names the problem and the fix."""


class CheckpointError(Qwen3VLExportError):
    """The input checkpoint is missing, unsupported or inconsistent."""


class OptionsError(Qwen3VLExportError):
    """The command-line options ask for something this tool cannot do."""


class ParityError(Qwen3VLExportError):
    """An exported artifact differs from transformers beyond the tolerance."""


class ReferenceStackError(Qwen3VLExportError):
    """The installed transformers cannot serve as the reference for a check."""
