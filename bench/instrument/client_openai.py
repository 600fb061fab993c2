"""The optional load transport: the official `openai` SDK, as an application would see it.

Slower per chunk than the raw transport (its parsed objects cost client CPU that shows up
as latency at high concurrency), so it is for cross-checking, not the default.
"""

from __future__ import annotations

from time import perf_counter

from bench.instrument.records import Record
from bench.instrument.stream import StreamParser
from bench.instrument.transport import TokenCounter


class OpenAITransport:
    """The Transport protocol (bench.instrument.transport) over the SDK's streaming calls."""

    def __init__(
        self,
        base_url: str,
        api: str,
        api_key: str | None,
        timeout: float | None,
        count: TokenCounter,
        connect_timeout: float | None = None,
        think: bool = False,
    ):
        import openai

        self.api, self.count, self.think = api, count, think
        limits = openai.Timeout(timeout, connect=connect_timeout)  # the SDK has no first-token limit
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=limits)
        self.errors = (openai.APIError,)
        self.kinds = {openai.APITimeoutError: "timeout_total", openai.APIConnectionError: "server_gone"}

    async def preconnect(self, n: int) -> None:
        """The SDK pools connections itself; nothing to open ahead."""

    async def send(self, body: dict, request_id: str, rec: Record):
        """Send one request; (end time, fill), as the Transport protocol says."""
        body = dict(body)
        known = {"model", "prompt", "messages", "max_tokens", "stream", "stream_options", "temperature"}
        extra = {k: body.pop(k) for k in list(body) if k not in known}
        create = self.client.chat.completions.create if self.api == "chat" else self.client.completions.create
        parser = StreamParser(self.api, self.think)
        rec.sent = perf_counter()
        try:
            stream = await create(**body, extra_body=extra, extra_headers={"X-Request-Id": request_id})
            parser.stream_opened()
            async for chunk in stream:
                parser.event(chunk.model_dump(exclude_unset=True), perf_counter())
            parser.stream_ended()
        except self.errors as e:
            kind = next((k for cls, k in self.kinds.items() if isinstance(e, cls)), None)
            parser.refused(getattr(e, "status_code", 0) or 0, str(e), kind)
        end = perf_counter()
        return end, lambda: parser.fill(rec, self.count)

    async def close(self) -> None:
        await self.client.close()
