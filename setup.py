from pathlib import Path

from setuptools import find_packages, setup

# what runs an exported folder (genai_qwen3vl.runtime): no torch
RUNTIME = [
    "onnxruntime-genai>=0.18,<0.19",  # the runtime we target (its C++ side runs qwen3_vl)
    "onnxruntime>=1.32",
    "numpy>=1.26",
    "pillow>=10",
    "tokenizers>=0.21",
    "jinja2>=3.1",  # chat templates in Qwen3VLProcessor.apply_chat_template
    # structured output (runtime/constraints.py): og's guidance is llguidance compiled into its wheel;
    # the same library's Python package checks a schema or grammar before it reaches og, and
    # jsonschema checks a schema against its metaschema
    "llguidance>=1.2,<2",
    "jsonschema>=4.18",
    "tqdm>=4.66",  # the batch command's progress bar
]
# what exports a checkpoint (genai_qwen3vl.export); og's builder, which writes the decoder, needs torch and transformers too
EXPORT = [
    "torch>=2.9",
    # Qwen3-VL's released processing (transformers 4.57.1); 5.24 put an extra vision start/end pair
    # around a video's frames (fixed in 5.25), and the exporter needs transformers 5's APIs
    "transformers>=5.25,<6",
    "onnx>=1.18",
    "onnxscript>=0.5",
    "onnx-ir>=0.1.10",
    "safetensors>=0.4",
    "huggingface_hub>=0.30",
]
# what checks an export against transformers (genai_qwen3vl.verify, --validate)
VERIFY = EXPORT + [
    "torchvision>=0.24",  # transformers' Qwen3-VL AutoProcessor needs it
    "av>=12",  # transformers' video loader for files
]
VIDEO = ["av>=12"]  # decoding video files in Qwen3VLProcessor
# genai-qwen3vl batch: Parquet tables in and out (JSONL and CSV need nothing more)
BATCH = ["pyarrow>=15"]
# genai-qwen3vl batch --ray: Ray Data over a cluster (runtime/batch/ray_pool.py); below 2.64, which
# drops the **ray_remote_args that carry max_task_retries
RAY = ["ray[data,serve]>=2.52,<2.64"]
# genai-qwen3vl serve: the OpenAI-compatible server (runtime tier: still no torch)
SERVE = [
    "fastapi>=0.115",
    "starlette>=0.40",
    "uvicorn>=0.30",
    "h11>=0.14",  # runtime/serve/deadlines.py: uvicorn's h11 protocol with a header deadline
    "pydantic-core>=2.14",  # runtime/serve/protocol.py: strict JSON (no NaN/Infinity, bounded depth)
    "pydantic>=2.7",  # runtime/serve/protocol.py: the request and response models (the OpenAPI schema)
    "prometheus-client>=0.20",
    "av>=12",
]

setup(
    name="genai-qwen3vl",
    version="0.2.0",
    description="Export Hugging Face Qwen3-VL checkpoints for stock onnxruntime-genai, DeepStack included, checked against transformers",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["genai_qwen3vl", "genai_qwen3vl.*"]) + ["genai_qwen3vl.processor_configs"],
    package_dir={"genai_qwen3vl.processor_configs": "processor_configs"},
    package_data={"genai_qwen3vl.processor_configs": ["*.json"], "genai_qwen3vl.runtime.serve": ["static/*"]},
    py_modules=["builder_qwen3vl"],
    install_requires=RUNTIME,
    extras_require={
        "export": EXPORT,
        "verify": VERIFY,
        "video": VIDEO,
        # install instead of the CPU packages: pip install "genai-qwen3vl[cuda]" && pip uninstall onnxruntime-genai onnxruntime
        "cuda": ["onnxruntime-genai-cuda>=0.18,<0.19", "onnxruntime-gpu>=1.31"],
        "serve": SERVE,
        "batch": BATCH,
        "ray": RAY + BATCH,
        # the server's tests drive it with the official openai client, httpx and a real browser (Debian's chromium)
        "test": VERIFY
        + SERVE
        + RAY
        + [
            "pytest>=8",
            "pytest-xdist>=3.6",  # scripts/test.sh runs the suite on every core
            "hypothesis>=6",
            "ruff>=0.6",
            "openai>=1.50",
            "httpx>=0.27",
            "playwright>=1.45",
            # the tier contracts (.importlinter) and the API fuzzer over the server's OpenAPI schema
            "import-linter>=2.1",
            "schemathesis>=4.0",
        ],
        # benchmarks/run.py --llama-cpp: llama.cpp's converter reads tokenizers through sentencepiece first
        "bench": ["matplotlib>=3.8", "sentencepiece>=0.2"],
    },
    entry_points={
        "console_scripts": [
            "genai-qwen3vl=genai_qwen3vl.cli:console_main",
            "genai-qwen3vl-builder=genai_qwen3vl.cli:builder_console",
        ]
    },
)
