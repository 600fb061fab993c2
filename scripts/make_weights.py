"""Write random weights, drawn from a fixed seed, for a model folder of recipes/models/.

Transformers' server loads real weights (it has no dummy load format), so the served copy is made
here: the config of recipes/models/NAME, the tiny tokenizer, and safetensors from `from_config` +
`save_pretrained`. It is laid out as a Hugging Face hub cache entry, the only place from which
`transformers serve` lists a model on /v1/models:

    CACHE/hub/models--local--NAME/refs/main          the snapshot's id
    CACHE/hub/models--local--NAME/snapshots/<id>/    config, tokenizer, weights, weights.sha256

The snapshot id is a hash of what decides the weights (config, seed, dtype), so a new config or seed
is a new snapshot. A second run finds the snapshot, checks its weights against weights.sha256, and
writes nothing when they match. EOS is switched off in the served config (eos_token_id null), so
every request runs to max_tokens: this engine refuses `ignore_eos`. And the special tokens (<unk>,
<s>, </s>) get an output row of zeros: the server streams them as no text (it decodes with
skip_special_tokens), so a request that drew one would carry a token no chunk shows. With greedy
decoding (the client sends temperature 0) a zero logit never wins against 4,000 random ones.

Run with the Python that serves (it needs torch and transformers):
    PYTHON scripts/make_weights.py recipes/models/tiny-llama --cache .run/hf-cache
    python3 scripts/make_weights.py recipes/models/llama-1b --cache .run/hf-cache --device cuda
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "recipes/models/tiny-llama"  # every served model shares the tiny tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
SPECIAL_IDS = (0, 1, 2)  # <unk>, <s>, </s> of the tiny tokenizer (scripts/make_tiny_tokenizer.py)
ORG = "local"
RECIPE = 2  # how the weights are made; a change here is a new snapshot


def snapshot_id(config: dict, seed: int, dtype: str) -> str:
    """40 hex digits, as the hub's commit ids, from everything that decides the weights."""
    key = json.dumps({"config": config, "seed": seed, "dtype": dtype, "recipe": RECIPE}, sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()


def weights_digest(folder: Path) -> str:
    """sha256 over the weight files, in name order."""
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def is_complete(snap: Path) -> bool:
    stamp = snap / "weights.sha256"
    return stamp.exists() and stamp.read_text().strip() == weights_digest(snap)


def write_weights(config: dict, snap: Path, seed: int, dtype: str, device: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(seed)
    cfg = LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    cfg.eos_token_id = None  # the config the server reads: EOS can never end a request early
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype))
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        model.get_output_embeddings().weight[list(SPECIAL_IDS)] = 0
    model.save_pretrained(snap)


def make(model_dir: Path, cache: Path, seed: int, dtype: str, device: str) -> str:
    """Make (or find) the served copy of `model_dir`; its snapshot folder (served as `local/NAME`)."""
    config = json.loads((model_dir / "config.json").read_text())
    name = model_dir.name
    repo = cache / "hub" / f"models--{ORG}--{name}"
    snap_id = snapshot_id(config, seed, dtype)
    snap = repo / "snapshots" / snap_id
    if is_complete(snap):
        print(f"weights for {ORG}/{name} already in {snap} (hash checked)", file=sys.stderr)
    else:
        print(f"writing random weights (seed {seed}, {dtype}) for {ORG}/{name} into {snap}", file=sys.stderr)
        started = time.monotonic()
        tmp = snap.with_name(snap_id + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_weights(config, tmp, seed, dtype, device)
        for f in TOKENIZER_FILES:
            shutil.copy(TOKENIZER / f, tmp / f)
        (tmp / "weights.sha256").write_text(weights_digest(tmp) + "\n")
        shutil.rmtree(snap, ignore_errors=True)
        tmp.rename(snap)  # a half-written snapshot is never taken for a whole one
        print(f"  done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(snap_id)
    return str(snap)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path, help="A folder of recipes/models/ holding config.json.")
    p.add_argument("--cache", type=Path, required=True, help="The Hugging Face cache folder (HF_HOME) to write into.")
    p.add_argument("--seed", type=int, default=0, help="Seed the weights are drawn from.")
    p.add_argument("--dtype", default="bfloat16", help="torch dtype of the weights, e.g. bfloat16 or float32.")
    p.add_argument("--device", default="cpu", help="Where the weights are drawn: cpu, or cuda for a large model.")
    args = p.parse_args()
    if not (args.model_dir / "config.json").exists():
        print(f"make_weights: {args.model_dir} has no config.json; give a folder of recipes/models/", file=sys.stderr)
        return 2
    print(make(args.model_dir, args.cache, args.seed, args.dtype, args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
