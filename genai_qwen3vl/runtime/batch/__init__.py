"""``genai-qwen3vl batch OUT_DIR --input IN --output OUT``: a whole table or folder of images and
videos answered through stock onnxruntime-genai, resumable and exact (runtime tier: no torch).

    table.py     the input: a folder of media (with --prompt) or a JSONL / CSV / Parquet table -> Rows
    store.py     the output: rows written in atomic chunks, skipped on a rerun, merged once at the end
    answer.py    one row: chat template, Qwen3VLProcessor, og's Generator (a constraint where the row
                 asks for JSON), the text split into reasoning, content and tool calls
    pool.py      N engine processes on this machine, each its own og model and threads; a process
                 that dies is replaced and its row tried again
    ray_pool.py  --ray: the same rows on a Ray cluster, Ray Data actors each holding one og model
    command.py   the command line: flags, progress, summary, exit codes
"""
