"""Control plane: ask the server what it serves, with the `openai` SDK, before any load.

Turns the usual failures (nothing listening, wrong key, wrong model name) into one sentence,
and measures how many prompt tokens the server adds on its own (BOS, chat template) so the
workload can ask for exactly the requested input length.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.errors import UserError

PROBE_WORDS = 16
# The probe's request is the server's first: engines that load, compile or warm up on it (Transformers'
# server took 24 s for its first answer on 2 busy cores, SGLang compiles DeepGEMM kernels) get this long.
FIRST_ANSWER_TIMEOUT = 300.0


@dataclass
class ServerInfo:
    base_url: str
    model: str
    max_model_len: int | None
    root: str | None  # the model path the server loaded, when it says (vLLM does)
    version: str | None
    system_fingerprint: str | None = None
    model_given: bool = True  # False: none was asked for and the server's only model is used


def _client(base_url: str, api_key: str | None, timeout: float = 30):
    import openai

    return openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=timeout)


def _explain(e: Exception, base_url: str, model: str | None = None, waited: float | None = None) -> UserError:
    import openai

    if isinstance(e, openai.APITimeoutError) and waited is not None:  # it listed its models: it is up
        longer = f" or raise --first-token-timeout (up to {FIRST_ANSWER_TIMEOUT:.0f} s here)"
        return UserError(
            f"the server at {base_url} answers (it lists its models) but gave no answer to a first one-token "
            f"request within {waited:g} s; it may still be loading or warming up: see its log and retry"
            + (longer if waited < FIRST_ANSWER_TIMEOUT else "")
        )
    said = f"{e} {e.response.text}" if isinstance(e, openai.APIStatusError) else str(e)  # the SDK's str has no body
    if isinstance(e, openai.BadRequestError | openai.UnprocessableEntityError) and "ignore_eos" in said:
        return UserError(
            f"the server at {base_url} refuses the field ignore_eos; pass --no-ignore-eos (output lengths are then "
            "checked against the server's usage), or start it with a serve recipe that records its engine"
        )
    if isinstance(e, openai.APIConnectionError):
        return UserError(f"no server answers at {base_url}; start one (e.g. `just cpu-serve`) or fix --base-url")
    if isinstance(e, openai.AuthenticationError):
        return UserError(f"the server at {base_url} refused the API key; set OPENAI_API_KEY")
    if isinstance(e, openai.NotFoundError) and model is None and not base_url.rstrip("/").endswith("/v1"):
        return UserError(
            f"the server at {base_url} has no /models endpoint; OpenAI-compatible servers answer under /v1: "
            f"try --base-url {base_url.rstrip('/')}/v1"
        )
    if isinstance(e, openai.NotFoundError):
        return UserError(
            f"the server at {base_url} has no model {model!r} or no such endpoint; check --model and --base-url"
        )
    if isinstance(e, openai.APIStatusError):
        return UserError(f"the server at {base_url} answered HTTP {e.status_code}: {e.message}")
    return UserError(f"talking to {base_url} failed: {e}")


def discover(base_url: str, model: str | None, api_key: str | None) -> ServerInfo:
    """List the served models; check `model` is one of them (none given: the server's only one)."""
    try:
        data = _client(base_url, api_key).models.list().data
    except Exception as e:
        raise _explain(e, base_url) from None
    ids = [m.id for m in data]
    if not ids:
        raise UserError(f"the server at {base_url} serves no model")
    given = model is not None
    if not given and len(ids) > 1:
        raise UserError(f"the server at {base_url} serves several models ({', '.join(ids)}): pass --model NAME")
    model = model or ids[0]
    if model not in ids:
        raise UserError(f"the server at {base_url} does not serve {model!r}; it serves: {', '.join(ids)}")
    entry = data[ids.index(model)].model_extra or {}
    return ServerInfo(
        base_url, model, entry.get("max_model_len"), entry.get("root"), _version(base_url), model_given=given
    )


def _version(base_url: str) -> str | None:
    """The engine's /version (vLLM, TRT-LLM) or /server_info (SGLang), if it has one."""
    u = urlsplit(base_url)
    for path in ("/version", "/server_info"):
        try:
            with urllib.request.urlopen(f"{u.scheme}://{u.netloc}{path}", timeout=5) as r:
                obj = json.loads(r.read())
                v = obj.get("version") if isinstance(obj, dict) else None
                if v:
                    return str(v)
        except (urllib.error.URLError, OSError, ValueError):
            continue
    return None


def prompt_overhead(
    info: ServerInfo,
    api: str,
    probe_text: str,
    api_key: str | None,
    extra_body: dict,
    timeout: float = FIRST_ANSWER_TIMEOUT,
) -> int:
    """Tokens the server counts beyond our own `PROBE_WORDS`-token probe text; waits up to `timeout`
    for the answer (often the server's first)."""
    client = _client(info.base_url, api_key, timeout)
    # The probe is not streamed, and vLLM rejects stream options on a request that is not.
    extra_body = {k: v for k, v in extra_body.items() if k not in ("stream", "stream_options")}
    try:
        if api == "chat":
            r = client.chat.completions.create(
                model=info.model,
                max_tokens=1,
                extra_body=extra_body,
                messages=[{"role": "user", "content": probe_text}],
            )
        else:
            r = client.completions.create(model=info.model, prompt=probe_text, max_tokens=1, extra_body=extra_body)
    except Exception as e:
        raise _explain(e, info.base_url, info.model, waited=timeout) from None
    info.system_fingerprint = getattr(r, "system_fingerprint", None)
    if r.usage is None:
        return 0  # the server does not report usage; nothing to compensate against
    return r.usage.prompt_tokens - PROBE_WORDS
