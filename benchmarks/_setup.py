"""Imported first by every benchmark script: the repository (and its demo package and test helpers)
on sys.path, model hubs offline."""
import os
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples"), str(ROOT / "tests")]  # dithub, the demo package, test helpers
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")
