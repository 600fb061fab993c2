"""Stream one completion and one chat completion from a server and show what came back.

A smoke test by hand (`just cpu-hello`): proves the server answers streamed requests and
reports usage, before any benchmark is run. A server that is not there or answers with an error
is one `python -m bench.serve.hello: ...` sentence on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

import openai

from bench.errors import UserError, exit_status

PROG = "python -m bench.serve.hello"


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


def first_model(client: openai.OpenAI, base_url: str) -> str:
    try:
        models = client.models.list().data
    except (openai.APIConnectionError, openai.APIStatusError):
        raise
    except (openai.APIError, AttributeError, TypeError, ValueError):  # the answer is not JSON, e.g. a web page
        raise UserError(f"{base_url}/models is not an OpenAI model list: check --base-url (it ends in /v1)") from None
    if not models:
        raise UserError(f"the server at {base_url} lists no model at /models: check --base-url")
    return models[0].id


def hello(base_url: str, max_tokens: int) -> None:
    client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "none"))
    try:
        model = first_model(client, base_url)
        for api in ("completions", "chat"):
            text, usage = stream_once(client, model, api, max_tokens)
            print(f"[{api}] {model}: {text!r}")
            if usage is None:
                print(f"[{api}] usage: none in the stream (the server ignores stream_options.include_usage)")
            else:
                print(f"[{api}] usage: prompt_tokens={usage.prompt_tokens} completion_tokens={usage.completion_tokens}")
    except openai.APIConnectionError:
        raise UserError(f"no server answers at {base_url}; start one with `just cpu-serve`") from None
    except openai.APIStatusError as e:
        raise UserError(
            f"the server at {base_url} answered with an error ({e.message}): check --base-url and OPENAI_API_KEY"
        ) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="Server's OpenAI base URL.")
    p.add_argument("--max-tokens", type=int, default=16, help="Tokens to generate per request.")
    args = p.parse_args(argv)
    return exit_status(PROG, lambda: hello(args.base_url, args.max_tokens))


if __name__ == "__main__":
    sys.exit(main())
