"""The input checkpoint: found locally or downloaded, and the files copied from it as they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import CheckpointError
from ..model.spec import checkpoint_file
from .options import ExportOptions

# Files copied from the checkpoint as they are (tokenizer, chat template, processor settings).
# processor_config.json is not among them: in the output that name is og's image pipeline.
COPIED_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "generation_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)


def resolve_checkpoint(options: ExportOptions) -> Path:
    """The local checkpoint folder: ``-i`` as given, or ``-m`` downloaded through huggingface_hub."""
    if options.input_dir is not None:
        path = Path(options.input_dir)
        if path.is_file():
            raise CheckpointError(f"-i {path} is a file; give the Hugging Face checkpoint folder that holds it")
        if not path.is_dir():
            raise CheckpointError(f"input folder {path} does not exist; give -i a Hugging Face checkpoint folder")
    else:
        path = _download(options.model_name, options.cache_dir)
    for name in (*COPIED_FILES, "processor_config.json"):  # refused now, not after the export
        checkpoint_file(path, name)
    return path


def _download(model_name: str, cache_dir: Path | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local_hint = "download the checkpoint where the hub is reachable and pass its folder with -i"
    try:
        return Path(
            snapshot_download(
                model_name,
                cache_dir=str(cache_dir) if cache_dir else None,
                allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"],
            )
        )
    except HFValidationError:
        raise CheckpointError(
            f"-m {model_name!r} is not a Hugging Face model id (like Qwen/Qwen3-VL-2B-Instruct); for a local folder use -i"
        ) from None
    except GatedRepoError:
        raise CheckpointError(
            f"-m {model_name}: the model is gated; accept its terms on the hub and log in (hf auth login), or {local_hint}"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"-m {model_name}: no such model on the Hugging Face hub (or it is private); check the id, or {local_hint}"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"-m {model_name}: the revision does not exist on the hub; {local_hint}") from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"-m {model_name}: the hub cannot be reached (offline, HF_HUB_OFFLINE set, or no network) and the model is "
            f"not in the download cache; {local_hint}"
        ) from None
    except HfHubHTTPError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"-m {model_name}: the hub refused the download ({first}); {local_hint}") from None


def copy_checkpoint_files(checkpoint: Path, out: Path) -> list[str]:
    """Copy the tokenizer, template and processor files; returns the names copied."""
    copied = []
    for name in COPIED_FILES:
        src = checkpoint_file(checkpoint, name)
        if src.is_file():
            shutil.copy2(src, out / name)
            copied.append(name)
    if "tokenizer.json" not in copied:
        raise CheckpointError(f"{checkpoint / 'tokenizer.json'} is missing; og's tokenizer needs it")
    if "preprocessor_config.json" not in copied:
        # transformers-5 layout: the image processor lives inside processor_config.json
        combined = json.loads(checkpoint_file(checkpoint, "processor_config.json").read_text())
        write_json(out / "preprocessor_config.json", combined["image_processor"])
        if combined.get("video_processor"):
            write_json(out / "video_preprocessor_config.json", combined["video_processor"])
    _embed_chat_template(out)
    return copied


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
    return path


def _embed_chat_template(out: Path) -> None:
    """og's tokenizer reads the chat template from tokenizer_config.json; Qwen ships it beside."""
    tok_cfg_path = out / "tokenizer_config.json"
    if not tok_cfg_path.is_file():
        return
    tok_cfg = json.loads(tok_cfg_path.read_text(encoding="utf-8"))
    if tok_cfg.get("chat_template"):
        return
    template = None
    if (out / "chat_template.jinja").is_file():
        template = (out / "chat_template.jinja").read_text(encoding="utf-8")
    elif (out / "chat_template.json").is_file():
        template = json.loads((out / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    if template:
        tok_cfg["chat_template"] = template
        tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
