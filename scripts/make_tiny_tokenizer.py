"""Train the tiny model's tokenizer once, on text every Python install carries.

The corpus is CPython's own standard library sources, so anyone can re-run this and
get a tokenizer of the same shape; the result is committed and never trained at run time.
Run: python scripts/make_tiny_tokenizer.py recipes/models/tiny-llama
`<think>` and `</think>` are added after training, as tokens of their own (ids 4096 and 4097), so
the CPU engine can serve the tiny model as a reasoning model (vLLM's --reasoning-parser looks
them up); `--add-think` adds them to an existing tokenizer.json without training again. They lie
outside the model's vocabulary (config.json's vocab_size stays 4096) on purpose: random weights
would write them now and then, and a plain run would then show reasoning. A reasoning engine
widens it with `--hf-overrides.vocab_size 4098` (tests/test_run_engine_reasoning.py).
"""

import pathlib
import sys
import sysconfig

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 4096  # trained tokens: must equal vocab_size in config.json
SPECIAL = ["<unk>", "<s>", "</s>"]
# Not special, as in DeepSeek-R1's tokenizer: they stay in the generated text, where the
# reasoning parser (or the client, on the completions API) finds them.
THINK = ["<think>", "</think>"]


def corpus():
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        yield path.read_text(encoding="utf-8", errors="ignore")


def main(out_dir: str) -> None:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    add_think(tok)
    tok.save(str(pathlib.Path(out_dir) / "tokenizer.json"))


def add_think(tok: Tokenizer) -> None:
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    assert [tok.token_to_id(t) for t in THINK] == [VOCAB_SIZE, VOCAB_SIZE + 1]


if __name__ == "__main__":
    if sys.argv[1] == "--add-think":
        path = str(pathlib.Path(sys.argv[2]) / "tokenizer.json")
        tok = Tokenizer.from_file(path)
        add_think(tok)
        tok.save(path)
    else:
        main(sys.argv[1])
