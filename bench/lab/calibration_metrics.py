"""The calibration server's own /metrics: what it served, counted, in Prometheus text.

Counted with plain integers as requests start and end (a few additions per request, nothing per
chunk); the text is made only when /metrics is asked for. The same names the instrument's
telemetry table reads for engine "calibration" (bench.instrument.telemetry):
  calibration:prompt_tokens_total      prompt tokens of every request that started a response
  calibration:generation_tokens_total  tokens in the chunks actually sent (all, or up to a cut)
  calibration:requests_running         responses under way now
  calibration:requests_total           responses started
They count the truth, whatever the usage says (--usage-scale makes the usage lie on purpose).
"""

from __future__ import annotations

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text, as prometheus_client sends it


class Counts:
    __slots__ = ("prompt", "generation", "running", "requests")

    def __init__(self) -> None:
        self.prompt = self.generation = self.running = self.requests = 0

    def started(self, prompt: int) -> None:
        self.prompt += prompt
        self.requests += 1
        self.running += 1

    def ended(self, generated: int) -> None:
        self.generation += generated
        self.running -= 1

    def text(self) -> bytes:
        rows = (
            ("prompt_tokens", "counter", "Prompt tokens of the responses started.", self.prompt),
            ("generation_tokens", "counter", "Tokens in the chunks sent.", self.generation),
            ("requests_running", "gauge", "Responses under way.", self.running),
            ("requests", "counter", "Responses started.", self.requests),
        )
        lines = []
        for name, kind, about, value in rows:
            sample = f"calibration:{name}_total" if kind == "counter" else f"calibration:{name}"
            lines += [f"# HELP calibration:{name} {about}", f"# TYPE calibration:{name} {kind}", f"{sample} {value}"]
        return ("\n".join(lines) + "\n").encode()
