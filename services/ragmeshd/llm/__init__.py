"""The llm service: a small language model (by default SmolLM2-135M-Instruct, run by
llama.cpp) served as ragmesh.llm.v1.LlmService, one generation at a time behind a bounded
wait queue.

    engine.py    the model: load, warm-up, chat formatting, streaming, queue, cancellation
    records.py   what a caller asks, what a generation reports, the errors
    generation.py  one generation in the model's thread, token by token
    stops.py     stop sequences over a stream of text (what may be sent, what is held back)
    packaged.py  where the packaged .gguf file lies
"""
