"""Where the project keeps things, found from this file; each may be moved by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("RESULTS", ROOT / "results"))  # run folders and campaigns
RUN_DIR = Path(os.environ.get("BENCH_RUN_DIR", ROOT / ".run"))  # pid, log and serve-record files
SCENARIO_DIR = ROOT / "recipes" / "scenarios"
TINY_MODEL = ROOT / "recipes" / "models" / "tiny-llama"  # the embedded tiny Llama (tokenizer too)
