"""Checks against transformers, the reference: each graph (``artifacts``), greedy generation end
to end through the stock og API (``generation``), and the command line's ``--validate``
(``validate``). Tolerances live in ``genai_qwen3vl.model.precisions``. Needs the ``verify``
extra (torch, transformers, torchvision for transformers' processor)."""
