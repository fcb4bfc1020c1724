"""What a checkpoint is, independent of how it is exported or run: its dimensions (``spec``), the
architecture registry, one record per precision, each graph's I/O contract and the image and
video preprocessing settings. Pure Python and numpy: no torch, no onnxruntime."""
