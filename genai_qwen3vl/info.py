"""``genai-qwen3vl info OUT_DIR``: what an exported folder is (its manifest: how, from what and
with what it was made, and its validation) and what it needs to run (the onnxruntime-genai
distribution and versions for its execution provider, the extras for videos and the server,
its files). ``--json`` prints the same as one JSON object.

Reads the folder through ``model.folder`` only: no og, no torch. Exit codes: 0, or 2 with one
line on stderr for a path that is not an exported folder.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
from typing import Any

from .errors import FolderError
from .model.folder import GENAI_CONFIG, MANIFEST, ExportedFolder

DESCRIPTION = "Print an exported folder's manifest (how it was made and checked) and what it needs to run."


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])


def in_range(version: str, spec: str) -> bool:
    """Whether ``version`` satisfies ``spec``, a comma-separated list of ``>=X`` / ``<Y`` bounds
    (the form of ``model.folder.OG_VERSIONS``), comparing release numbers only."""
    have = _release(version)
    for clause in spec.split(","):
        op, bound = re.fullmatch(r"\s*(>=|<)\s*([\d.]+)\s*", clause).groups()
        if (have < _release(bound)) if op == ">=" else (have >= _release(bound)):
            return False
    return True


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(folder: ExportedFolder) -> dict[str, Any]:
    """The folder as JSON data: what ``--json`` prints and the text is made from."""
    needs = folder.requirements()
    installed = _installed(needs.og_distribution)
    return {
        "path": str(folder.path),
        "architecture": folder.architecture.hf_class,
        "og_model_type": folder.og_model_type,
        "precision": folder.precision if folder.manifest is not None else folder.precision_from_graph(),
        # where the precision was read: the manifest, or (a folder without one) the decoder graph
        "precision_from": MANIFEST if folder.manifest is not None else folder.decoder.filename,
        "provider": folder.provider,
        "manifest": folder.manifest.as_dict() if folder.manifest is not None else None,
        "genai_config": {
            "hidden_size": folder.hidden_size,
            "num_hidden_layers": folder.num_hidden_layers,
            "context_length": folder.context_length,
            "max_length": folder.search.get("max_length"),
            "eos_token_ids": list(folder.eos_token_ids),
            "image_token_id": folder.image_token_id,
            "video_token_id": folder.video_token_id,
            "vision_start_token_id": folder.vision_start_token_id,
            "graphs": {g.name: {"filename": g.filename, "provider": g.provider} for g in (folder.vision, folder.embedding, folder.decoder)},
        },
        "requirements": {
            "og_distribution": needs.og_distribution,
            "og_versions": needs.og_versions,
            "install": needs.install,
            "installed": installed,
            "installed_fits": installed is not None and in_range(installed, needs.og_versions),
            "extras": {name: {"for": what, "install": command} for name, (what, command) in needs.extras.items()},
        },
        "files": dict(folder.files()),
    }


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}"


def format_text(info: dict[str, Any]) -> str:
    lines = [f"{info['path']}: {info['architecture']} for onnxruntime-genai (model type {info['og_model_type']})"]
    manifest = info["manifest"]
    if manifest is None:
        precision = info["precision"] or "unknown"
        lines += [
            f"{MANIFEST}: missing (a folder exported by an older genai-qwen3vl): how it was made is not recorded",
            f"  precision        -p {precision} (read from {info['precision_from']}) -e {info['provider']} (read from {GENAI_CONFIG})",
        ]
    else:
        source = manifest["source"]
        where = f"{source['hub_id']}@{source['revision'] or '?'}" if source["hub_id"] else source["local_path"]
        validation = manifest["validation"]
        if validation is None:
            checked = "none recorded (an export with --validate records its result here)"
        else:
            reference = ", ".join(f"{k} {v}" for k, v in validation.get("reference", {}).items())
            checked = f"{validation['message']} (against {reference}, {validation.get('validated_at', '?')})"
        lines += [
            f"{MANIFEST} (format {manifest['manifest_version']}), written by genai-qwen3vl {manifest['genai_qwen3vl_version']}:",
            f"  precision        -p {manifest['precision']} -e {manifest['provider']}",
            f"  source           {where}",
            f"  config.json      sha256 {source['config_sha256']}",
            f"  made with        {', '.join(f'{k} {v}' for k, v in manifest['versions'].items())}",
            f"  validation       {checked}",
            "  options",
            *(f"    {k:<24} {json.dumps(v)}" for k, v in manifest["options"].items()),
        ]
    cfg = info["genai_config"]
    graphs = ", ".join(f"{name} {g['filename']} on {g['provider']}" for name, g in cfg["graphs"].items())
    lines += [
        f"{GENAI_CONFIG}:",
        f"  decoder          {cfg['num_hidden_layers']} layers, hidden size {cfg['hidden_size']} (DeepStack's channels included), "
        f"context {cfg['context_length']}, default max_length {cfg['max_length']}",
        f"  graphs           {graphs}",
    ]
    needs = info["requirements"]
    have = needs["installed"]
    state = "not installed" if have is None else f"installed: {have}" + ("" if needs["installed_fits"] else ", outside that range")
    lines += [
        "to run it:",
        f"  {needs['og_distribution']}{needs['og_versions']} ({state}): {needs['install']}",
        *(f"  {extra['for']}: {extra['install']}" for extra in needs["extras"].values()),
        "files:",
        *(f"  {name:<32} {_size(size):>10}" for name, size in info["files"].items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "genai-qwen3vl info") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("folder", metavar="OUT_DIR", help="a folder written by builder_qwen3vl.py / genai-qwen3vl export")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    try:
        info = describe(ExportedFolder.open(args.folder))
    except FolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else format_text(info))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m genai_qwen3vl.info"))
