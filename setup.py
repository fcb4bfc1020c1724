from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="genai-qwen3vl",
    version="0.1.0",
    description="Export Hugging Face Qwen3-VL checkpoints for stock onnxruntime-genai, DeepStack included, "
    "checked against transformers",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["genai_qwen3vl", "genai_qwen3vl.*"]) + ["genai_qwen3vl.processor_configs"],
    package_dir={"genai_qwen3vl.processor_configs": "processor_configs"},
    package_data={"genai_qwen3vl.processor_configs": ["*.json"]},
    py_modules=["builder_qwen3vl"],
    install_requires=[
        # the runtime we target; its builder writes the decoder, its C++ runtime runs qwen3_vl
        "onnxruntime-genai>=0.18,<0.19",
        "onnxruntime>=1.32",
        # transformers is the parity reference and the vision/embedding export source
        "transformers>=5.24,<6",
        "torch>=2.9",
        "torchvision>=0.24",  # transformers' Qwen3-VL AutoProcessor needs it
        "onnx>=1.18",
        "onnxscript>=0.5",
        "onnx-ir>=0.1.10",
        "safetensors>=0.4",
        "tokenizers>=0.21",
        "huggingface_hub>=0.30",
        "pillow>=10",
        "numpy>=1.26",
        "jinja2>=3.1",  # chat templates in Qwen3VLProcessor.apply_chat_template
    ],
    extras_require={
        # install instead of the CPU packages: pip install "genai-qwen3vl[cuda]" && pip uninstall onnxruntime-genai onnxruntime
        "cuda": ["onnxruntime-genai-cuda>=0.18,<0.19", "onnxruntime-gpu>=1.32"],
        "video": ["av>=12"],  # decoding video files in Qwen3VLProcessor
        "test": ["pytest>=8", "av>=12", "hypothesis>=6"],
        "bench": ["matplotlib>=3.8"],
    },
    entry_points={
        "console_scripts": [
            "genai-qwen3vl-builder=genai_qwen3vl.cli:main",
            "genai-qwen3vl-demo=genai_qwen3vl.demo:main",
        ]
    },
)
