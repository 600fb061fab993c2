"""Train the tiny model's tokenizer once, on text every Python install carries.

The corpus is CPython's own standard library sources, so anyone can re-run this and
get a tokenizer of the same shape; the result is committed and never trained at run time.
Run: python scripts/make_tiny_tokenizer.py recipes/models/tiny-llama
"""

import pathlib
import sys
import sysconfig

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 4096  # must equal vocab_size in config.json
SPECIAL = ["<unk>", "<s>", "</s>"]


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
    tok.save(str(pathlib.Path(out_dir) / "tokenizer.json"))


if __name__ == "__main__":
    main(sys.argv[1])
