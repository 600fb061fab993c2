"""Stream one completion and one chat completion from a server and show what came back.

A smoke test by hand (`just cpu-hello`): proves the server answers streamed requests and
reports usage, before any benchmark is run.
"""

from __future__ import annotations

import argparse
import os
import sys

import openai


def stream_once(client: openai.OpenAI, model: str, api: str, max_tokens: int) -> tuple[str, object]:
    common = dict(
        model=model,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    if api == "chat":
        stream = client.chat.completions.create(messages=[{"role": "user", "content": "Hello!"}], **common)
    else:
        stream = client.completions.create(prompt="Hello, my name is", **common)
    text, usage = [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "" if api == "chat" else choice.text)
    return "".join(text), usage


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.serve.hello", description=__doc__)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="Server's OpenAI base URL.")
    p.add_argument("--max-tokens", type=int, default=16, help="Tokens to generate per request.")
    args = p.parse_args(argv)
    client = openai.OpenAI(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY", "none"))
    try:
        model = client.models.list().data[0].id
        for api in ("completions", "chat"):
            text, usage = stream_once(client, model, api, args.max_tokens)
            print(f"[{api}] {model}: {text!r}")
            print(f"[{api}] usage: prompt_tokens={usage.prompt_tokens} completion_tokens={usage.completion_tokens}")
    except openai.APIConnectionError:
        print(f"error: no server answers at {args.base_url}; start one with `just cpu-serve`", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
