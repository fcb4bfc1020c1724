"""Every (precision, execution provider) pair the README lists is exported here, and each of its
graphs loads in an onnxruntime session (the CPU provider resolves a graph's structure even where
it lacks kernels to run it); the export's own weight-free graph check catches what onnxruntime
would refuse."""

import onnx
import onnxruntime as ort
import pytest

from genai_qwen3vl.errors import Qwen3VLExportError
from genai_qwen3vl.export.graph_check import check_graph, dataflow_problems
from genai_qwen3vl.model import io_contract
from genai_qwen3vl.model.precisions import TARGETS
from genai_qwen3vl.model.spec import Qwen3VLSpec

from ..helpers import targets

ALL_TARGETS = targets(*(f"{t.precision}/{t.provider}" for t in TARGETS))


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_every_graph_of_every_target_loads_in_onnxruntime(target, exported):
    out = exported("awkward", *target.flags)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for contract in io_contract.GRAPHS.values():
        path = out / contract.filename
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except ort.capi.onnxruntime_pybind11_state.NotImplemented as exc:
            # the graph resolved; only a kernel is missing on the CPU provider (bf16 MatMul): the
            # bf16 decoder runs on CUDA (tests marked cuda)
            assert target.io_dtype == "bf16" and contract is io_contract.DECODER, f"{path.name}: {exc}"
            assert "Could not find an implementation" in str(exc)


def test_the_check_names_outputs_nothing_produces(exported, checkpoints, tmp_path):
    """og's packed-Attention decoder (what og's own builder writes for -p fp32 -e cuda) declares
    present.* outputs that no node produces: onnxruntime refuses it, and so does the check."""
    out = exported("awkward", "-p", "fp32", "-e", "cuda")
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert not dataflow_problems(model.graph)
    # take away what produces the KV cache outputs, as og's packed-Attention path does
    for node in model.graph.node:
        node.output[:] = ["" if name.startswith("present.") else name for name in node.output]
    broken = tmp_path / "model.onnx"
    onnx.save(model, str(broken))
    problems = dataflow_problems(model.graph)
    assert "graph output present.0.key does not exist in the graph" in problems
    target = next(t for t in TARGETS if t.flags == ("-p", "fp32", "-e", "cuda"))
    with pytest.raises(Qwen3VLExportError, match="present.0.key does not exist"):
        check_graph(broken, io_contract.DECODER, Qwen3VLSpec.from_checkpoint(checkpoints("awkward")), target)


def test_the_check_names_a_wrong_attention_op(exported, checkpoints):
    """A decoder whose attention op does not fit the target's genai_config (shared KV buffers
    only with GroupQueryAttention) is refused."""
    out = exported("awkward", "-p", "fp32", "-e", "cuda")  # MultiHeadAttention
    target = next(t for t in TARGETS if t.flags == ("-p", "fp16", "-e", "cuda"))  # GroupQueryAttention
    with pytest.raises(Qwen3VLExportError, match="attention ops are \\['MultiHeadAttention'\\]"):
        check_graph(out / "model.onnx", io_contract.DECODER, Qwen3VLSpec.from_checkpoint(checkpoints("awkward")), target)
