"""Which streamed chunks carry reasoning and which the answer, as the server labels them.

A reasoning model first streams its thinking, then its answer. Servers with a reasoning parser
send the thinking in the chunk's `delta.reasoning_content` (SGLang, TensorRT-LLM, older vLLM)
or `delta.reasoning` (vLLM 0.10+) and the answer in `delta.content`. Without a parser (and on
the completions API) the thinking stays inline in the text between `<think>` and `</think>`;
the client splits it there when the tokenizer has those tokens (`think_tags`), and an end tag
with no start before it means the prompt opened the thinking (DeepSeek-R1's chat template does).

A chunk is reasoning when it carries reasoning text and no answer text (a token that ends inside
a character comes with empty text: in the answer's field it is answer, else it goes with the chunk
before it); the answer begins at the first content chunk that is not, and every chunk after it
counts as answer (a model that thinks again later, between tool calls say, has only its first
thinking counted here; the server's reasoning_tokens, where it reports them, counts all).
Labelling stops there, so once its answer began a stream costs no more than before (with inline
tags, one search per read for an end tag that would turn the chunks so far into reasoning). Tags
split over two chunks are not recognised: with the think tokens in the vocabulary and one token
per chunk they never are.
"""

from __future__ import annotations

START, END = "<think>", "</think>"
TAG = b"think>"


def think_tags(tokenizer) -> bool:
    """Whether the tokenizer has `<think>` and `</think>` as tokens of their own, so that inline
    tags in generated text mark reasoning."""
    vocab = tokenizer.get_vocab()
    return START in vocab and END in vocab


def split_inline(text: str, inside: bool) -> tuple[str, str, bool, bool]:
    """Cut generated text at think tags: (reasoning part, answer part, inside a think section
    after it, whether an end tag came with no start tag before it in this text)."""
    reasoning = answer = ""
    bare = False
    while text:
        if inside:
            i = text.find(END)
            if i < 0:
                return reasoning + text, answer, True, bare
            reasoning, text, inside = reasoning + text[: i + len(END)], text[i + len(END) :], False
            continue
        i, j = text.find(START), text.find(END)
        if j >= 0 and (i < 0 or j < i):  # the prompt opened the thinking: all before the end is reasoning
            reasoning, answer, text, bare = reasoning + answer + text[: j + len(END)], "", text[j + len(END) :], True
        elif i >= 0:
            answer, reasoning, text, inside = answer + text[:i], reasoning + START, text[i + len(START) :], True
        else:
            return reasoning, answer + text, False, bare
    return reasoning, answer, inside, bare


class Split:
    """The labels of one stream's content chunks, by index (the chunk's place in chunk_times)."""

    __slots__ = ("think", "inside", "first_reasoning", "first_answer", "reasoning", "server_tokens")

    def __init__(self, think: bool = False):
        self.think = think  # split inline think tags in the generated text
        self.inside = False  # inside an inline think section
        self.first_reasoning: int | None = None
        self.first_answer: int | None = None
        self.reasoning: list[int] = []  # indices of reasoning chunks
        self.server_tokens: int | None = None  # usage.completion_tokens_details.reasoning_tokens, last seen

    @property
    def over(self) -> bool:
        """Whether the labels are settled: the answer began (and, with inline tags, after some
        reasoning; before that an end tag may still turn every chunk so far into reasoning)."""
        return self.first_answer is not None and (not self.think or self.first_reasoning is not None)

    def chunk(self, i: int, reasoning: str, answer: str, answer_field: bool = False) -> None:
        """Label content chunk `i` from its reasoning delta text and its generated text
        (`answer_field`: the answer's field was there, holding a string, if an empty one)."""
        if self.over:
            return
        if self.think and (self.inside or START in answer or END in answer):
            inline, answer, self.inside, bare = split_inline(answer, self.inside)
            if bare:  # every chunk so far was thinking the prompt had opened
                self.reasoning, self.first_answer = list(range(i)), None
                self.first_reasoning = 0 if i else None
            reasoning += inline
        if not reasoning and not answer and not answer_field:  # a token with no text (part of a character)
            if self.reasoning and self.reasoning[-1] == i - 1:  # goes with the chunk before it
                self.reasoning.append(i)
            return
        if reasoning:
            if self.first_reasoning is None:
                self.first_reasoning = i
            if not answer:
                self.reasoning.append(i)
                return
        if self.first_answer is None:
            self.first_answer = i

    def mixed(self, i: int) -> None:
        """Chunk `i`, labelled reasoning, carried answer text too: the answer began there."""
        if i in self.reasoning:
            self.reasoning.remove(i)
        if self.first_answer is None or i < self.first_answer:
            self.first_answer = i

    def fill(self, rec, times: list[float], tokens: list[int]) -> None:
        """Set the record's reasoning fields from the labels and the chunks' token counts."""
        if self.first_answer is None and self.first_reasoning is None and times:
            self.first_answer = 0  # chunks without text of either kind: not reasoning
        rec.first_reasoning = times[self.first_reasoning] if self.first_reasoning is not None else None
        rec.first_answer = times[self.first_answer] if self.first_answer is not None else None
        counted = sum(tokens[i] for i in self.reasoning if i < len(tokens)) if self.reasoning else 0
        # The server's figure, unless it says 0 while it labelled chunks as reasoning: vLLM counts
        # only tokens between think tags in the output, so a thinking the prompt opened reads 0.
        if self.server_tokens is not None and (self.server_tokens or not self.reasoning):
            rec.reasoning_tokens, rec.reasoning_source = self.server_tokens, "server"
        else:
            rec.reasoning_tokens, rec.reasoning_source = counted, "counted"
