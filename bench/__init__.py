"""bench: measure OpenAI-compatible LLM servers exactly, and compare engines and layouts."""

__version__ = "0.1.0"
