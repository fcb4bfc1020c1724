#!/usr/bin/env bash
# The CUDA checks on a GPU machine that has torch but no onnxruntime-gpu and no network:
# onnxruntime-gpu arrives as an xz tar split in parts (one per call of the device tool), the other
# packages as wheels; then the tests marked `cuda` and benchmarks/gpu.py run.
#
#   scripts/gpu_check.sh stash DIR      # copy DIR's parts (ort_*.tar.xz.part*) to $W/parts
#   scripts/gpu_check.sh main [DIR]     # stash DIR (default .gpu), install, check the CUDA provider, then
#                                       # run the tests and the benchmark in the background; wait for them
#   scripts/gpu_check.sh collect        # wait again for a run that `main` started, then copy its logs
#   scripts/gpu_check.sh tests -k EXPR  # after `stash`: install from .gpu and run only the cuda tests
#
# DIR holds: ort_*.tar.xz.part* and ort.sha256 (onnxruntime-gpu 1.31.1 unpacked, tarred, xz'd, split; the
# CUDA provider's non-sm_90 cubins zeroed to fit), and the wheels: onnxruntime-genai-cuda 0.18.0, transformers
# 5.25.0, huggingface_hub 2.4.0, httpx2, httpcore2, truststore, sniffio, regex, kernels 0.19.1 (transformers 5.25
# raises in from_pretrained without it), tomlkit. docs/gpu_benchmarks.md has the first run's results.
# Logs and results go to $W (/tmp/gpu) and are copied to $OUT (the device tool's folder) at the end.
# GPU_CHECK_WAIT_S: how long `main`/`collect` wait for the background run (default 480);
# GPU_CHECK_DIR, GPU_CHECK_SITE: the work folder and the install target (defaults /tmp/gpu, /tmp/site).
set -u
W=${GPU_CHECK_DIR:-/tmp/gpu}
OUT=${OUT:-$W/out}
SITE=${GPU_CHECK_SITE:-/tmp/site}
BENCH_ARGS=${GPU_CHECK_BENCH_ARGS:-}  # more options of benchmarks/gpu.py (a dry run: --tiny awkward --ep cpu ...)
WAIT_S=${GPU_CHECK_WAIT_S:-480}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$W/parts" "$OUT"
T0=$(date +%s)

stash() {
    cp "$1"/ort_*.tar.xz.part* "$W/parts/" 2>/dev/null
    cp "$1"/ort.sha256 "$W/parts/" 2>/dev/null
    ls -la "$W/parts"
}

environment() {
    export PYTHONPATH="$SITE:$REPO" PYTHONUNBUFFERED=1
    # the CUDA 13 libraries of the pip packages torch uses (cuBLAS, cuDNN, cuFFT, cuRAND, ...)
    local nv
    nv=$(python3 -c "import nvidia; print(*nvidia.__path__)" 2>/dev/null)
    if [ -n "$nv" ]; then
        LD_LIBRARY_PATH="$(find $nv -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    fi
}

install() {
    local tarball="$W/ort.tar.xz"
    cat "$W"/parts/ort_*.tar.xz.part* > "$tarball"
    (cd "$W/parts" && sed "s#  .*#  $tarball#" ort.sha256 | sha256sum -c -) || return 1
    mkdir -p "$SITE"
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer, 1 << 22)" "$tarball" |
        tar x -C "$SITE" || return 1
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$1"/*.whl || return 1
}

sanity() {
    python3 - <<'EOF'
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

print("onnxruntime", ort.__version__, ort.__file__, ort.get_available_providers())
nodes = [helper.make_node("MatMul", ["a", "b"], ["c"]), helper.make_node("Softmax", ["c"], ["d"], axis=-1),
         helper.make_node("Add", ["d", "a"], ["e"])]
f = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [64, 64])  # noqa: E731
model = helper.make_model(helper.make_graph(nodes, "g", [f("a"), f("b")], [f("e")]), opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 9
so = ort.SessionOptions()
so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
s = ort.InferenceSession(model.SerializeToString(), so, providers=["CUDAExecutionProvider"])
a, b = np.random.rand(64, 64).astype(np.float32), np.random.rand(64, 64).astype(np.float32)
c = a @ b
want = np.exp(c - c.max(-1, keepdims=True))
want = want / want.sum(-1, keepdims=True) + a
got = s.run(None, {"a": a, "b": b})[0]
print("CUDA session", s.get_providers(), "max |diff|", float(np.abs(got - want).max()))
import onnxruntime_genai as og

print("onnxruntime_genai", og.__version__, og.__id__, og.__file__)
import tokenizers
import torch
import transformers

print("transformers", transformers.__version__, "tokenizers", tokenizers.__version__, "torch", torch.__version__,
      torch.cuda.get_device_name(), "onnx", onnx.__version__)
EOF
}

work() {  # the background run: tests and benchmark preparation side by side, then the measurements
    cd "$REPO" || exit 1
    (timeout 330 python3 -m pytest tests/verify/test_precisions.py -m cuda -q -p no:cacheprovider $(python3 -c 'import pytest_timeout' 2>/dev/null && echo --timeout 240) >"$W/pytest.log" 2>&1
     echo $? >"$W/pytest.rc") &
    (timeout 300 python3 benchmarks/gpu.py prepare --workdir "$W/bench" $BENCH_ARGS >"$W/bench.log" 2>&1; echo $? >"$W/prep.rc") &
    wait
    timeout 200 python3 benchmarks/gpu.py measure --workdir "$W/bench" --repeats 3 $BENCH_ARGS --json "$W/gpu_bench.json" >>"$W/bench.log" 2>&1
    echo $? >"$W/bench.rc"
    touch "$W/done"
}

wait_and_collect() {
    while [ ! -e "$W/done" ] && [ $(($(date +%s) - T0)) -lt "$WAIT_S" ]; do
        sleep 15
        echo "--- $(($(date +%s) - T0)) s: pytest $(grep -c -E 'PASSED|FAILED' "$W/pytest.log" 2>/dev/null) lines; $(tail -c 300 "$W/pytest.log" 2>/dev/null | tail -1)"
        tail -n 2 "$W/bench.log" 2>/dev/null
    done
    for f in pytest.log bench.log gpu_bench.json sanity.log pytest.rc prep.rc bench.rc; do
        [ -e "$W/$f" ] && cp "$W/$f" "$OUT/"
    done
    echo "=== pytest (rc $(cat "$W/pytest.rc" 2>/dev/null))"
    tail -n 80 "$W/pytest.log" 2>/dev/null
    echo "=== bench (prep rc $(cat "$W/prep.rc" 2>/dev/null), measure rc $(cat "$W/bench.rc" 2>/dev/null))"
    tail -n 25 "$W/bench.log" 2>/dev/null
}

case "${1:-}" in
    stash)
        stash "$2"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
        ;;
    main)
        dir=${2:-.gpu}
        stash "$dir"
        install "$dir" || { echo "install failed"; exit 1; }
        environment
        echo "install done in $(($(date +%s) - T0)) s"
        sanity 2>&1 | tee "$W/sanity.log"
        cp "$W/sanity.log" "$OUT/"
        grep -q "CUDA session \['CUDAExecutionProvider'" "$W/sanity.log" || echo "WARNING: the CUDA provider did not run a session"
        setsid nohup bash "$0" _work </dev/null >"$W/work.log" 2>&1 &
        wait_and_collect
        ;;
    _work)
        environment
        work
        ;;
    collect)
        wait_and_collect
        ;;
    tests)  # stash .gpu, install, then only the cuda tests (pytest options after the word: -k ...)
        shift
        stash .gpu >/dev/null
        install .gpu || { echo "install failed"; exit 1; }
        environment
        cd "$REPO" || exit 1
        timeout 240 python3 -m pytest tests/verify/test_precisions.py -m cuda -q -p no:cacheprovider "$@" 2>&1 | tee "$OUT/pytest_tests.log" | tail -n 40
        ;;
    *)
        echo "usage: $0 stash DIR | main [DIR] | collect" >&2
        exit 2
        ;;
esac
