"""What runs at export time: the checkpoint in, the folder out. Stages: load and check the
checkpoint, export the vision tower and the embedding graph (torch.onnx), build the decoder
with onnxruntime-genai's builder and extend it (DeepStack, trimmed logits, int4), write the
configs, check every graph, publish. Needs the ``export`` extra (torch, transformers, onnx,
onnxruntime-genai's builder); imports nothing from ``verify``."""
