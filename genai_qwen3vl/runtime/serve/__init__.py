"""An OpenAI-compatible server for exported folders (``genai-qwen3vl serve OUT_DIR``), part of the
runtime tier: og, numpy, pillow, tokenizers, plus FastAPI and uvicorn (the serve extra); no torch.

    main.py      the command line
    app.py       routes, slots and queue, auth, limits, responses and server-sent events
    protocol.py  requests checked and turned into chat-template messages
    media.py     data: URLs and allowed local files; sizes checked before decoding
    engine.py    the og model, loaded once; one Generator per request in a worker thread
    output.py    stop strings, reasoning and tool calls split out of the streamed text
    metrics.py   Prometheus counters and histograms
    static/      the chat page served at /
"""
