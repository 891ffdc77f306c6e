"""Generate with llama-cpp-python called directly: the baseline for local tokens per second.

The process loads the GGUF model once, then reads one JSON request per stdin line and prints one
JSON result per line, so runs can alternate with runs through the bridge. The prompt is built as
the bridge builds it: the model's own chat template through Jinja2ChatFormatter, tokenized with
special tokens, and the template's stop strings. Sampling uses the same values the bridge sends
(greedy at temperature 0, the request's seed, repeat_penalty 1.1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, cast

from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from sage_bridge.providers.local_model import resolve_model_path

REPEAT_PENALTY = 1.1  # the value the bridge's local adapter passes to llama.cpp


def _token_text(llama: Llama, token: int) -> str:
    if token < 0:
        return ""
    return bytes(llama.detokenize([token], special=True)).decode("utf-8", errors="ignore")


def build_formatter(llama: Llama) -> Jinja2ChatFormatter:
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise SystemExit("the model has no tokenizer.chat_template; use a chat model")
    return Jinja2ChatFormatter(
        template=template, eos_token=_token_text(llama, llama.token_eos()), bos_token=_token_text(llama, llama.token_bos()),
    )


def generate(llama: Llama, formatter: Jinja2ChatFormatter, request: dict[str, Any]) -> dict[str, Any]:
    """Run one streamed generation and time it from the call to the last token."""
    started = time.perf_counter()
    formatted = formatter(messages=request["messages"])
    prompt = llama.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)
    stop: list[str] = []
    if isinstance(formatted.stop, list):
        stop = formatted.stop
    elif formatted.stop:
        stop = [formatted.stop]

    pieces: list[str] = []
    first: float | None = None
    finish_reason = "stop"
    chunks = llama.create_completion(
        prompt=prompt, max_tokens=request["max_tokens"], temperature=request["temperature"], top_p=request["top_p"],
        stop=stop or None, seed=request["seed"], repeat_penalty=REPEAT_PENALTY, stream=True,
    )
    for chunk in cast(Iterator[dict[str, Any]], chunks):  # stream=True returns an iterator of chunk dicts
        choice = chunk["choices"][0]
        if choice["text"]:
            first = first if first is not None else time.perf_counter() - started
            pieces.append(choice["text"])
        finish_reason = choice.get("finish_reason") or finish_reason
    total = time.perf_counter() - started

    text = "".join(pieces)
    # Counted the way the bridge counts completion tokens: by tokenizing the generated text.
    tokens = len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0
    return {"seconds": total, "ttft": first, "completion_tokens": tokens, "prompt_tokens": len(prompt),
            "text": text, "finish_reason": finish_reason}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve timed llama-cpp-python generations over stdin and stdout.")
    parser.add_argument("--model", required=True, help="GGUF path or pkg:PACKAGE/FILE")
    parser.add_argument("--context", type=int, required=True, help="context window in tokens (n_ctx)")
    parser.add_argument("--threads", type=int, required=True, help="llama.cpp threads (n_threads)")
    args = parser.parse_args(argv)

    llama = Llama(model_path=str(resolve_model_path(args.model)), n_ctx=args.context, n_threads=args.threads, verbose=False)
    formatter = build_formatter(llama)
    print("READY", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        print(json.dumps(generate(llama, formatter, json.loads(line))), flush=True)
    llama.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
