"""An OpenAI-compatible server for exported folders (``genai-qwen3vl serve OUT_DIR``), part of the
runtime tier: og, numpy, pillow, tokenizers, plus FastAPI and uvicorn (the serve extra); no torch.

    main.py, options.py    the command line; ServeOptions, every flag's default once
    app.py, state.py       create_app: the routes with their typed state, errors, the OpenAPI schema
    routes.py              thin handlers on an APIRouter
    protocol.py            request and response bodies as pydantic models; strict JSON
    scheduler.py           generation slots and the queue, jobs; messages.py: typed worker messages
    serving.py             answer assembly: the whole answer and the server-sent events
    detokenizer.py         token ids to text, piece by piece
    output.py              stop strings, reasoning and tool calls split out of the streamed text
    engine.py              the exported folder, loaded once; requests prepared for og
    worker.py              og in a process of its own: a TokenStream per request
    media.py               data: URLs and allowed local files; sizes checked before decoding
    deadlines.py           connection deadlines on uvicorn's h11 protocol
    metrics.py             Prometheus counters and histograms
    static/                the chat page served at /
"""
