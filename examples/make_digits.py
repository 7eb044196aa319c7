"""Train the embedded digits suite (bases, eight LoRA adapters, eight task vectors, five class-pair
LoRA adapters, probes, five linearized client task vectors, a backdoored rot90 adapter and its
backdoor vector; the defender's injected adapter and vector (IBVS), the attacker's further poisoned
adapters and their sparse backdoor vector) into DIR.

examples/digits was made by `python examples/make_digits.py examples/digits` (about eight minutes on
2 cores); the recipe is examples/dithub_demo/suite.py's RECIPE, and a directory already built with it is kept.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dithub_demo import build_suite
from dithub_demo.backdoor import build_backdoor, build_defence
from dithub_demo.federated import build_clients


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/make_digits.py DIR")
    start = time.perf_counter()
    log = lambda m: print(f"[{time.perf_counter() - start:5.0f} s] {m}", flush=True)  # noqa: E731
    suite = build_suite(Path(sys.argv[1]), log=log)
    clients = build_clients(suite, log=log)
    backdoor = build_backdoor(suite, log=log)
    defence = build_defence(suite, log=log)
    print(json.dumps({**suite.accuracy, "linearized clients": clients["accuracy"], "backdoor": backdoor, "defence": defence},
                     indent=1))


if __name__ == "__main__":
    main()
