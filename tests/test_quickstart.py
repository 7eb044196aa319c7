"""The README's demo runs offline and its claims hold."""
import subprocess
import sys
from pathlib import Path

from dithub import Repo

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "checkout reproduces the dog adapter's outputs exactly: True" in res.stdout
    max_diff = float(res.stdout.rsplit("max |diff| = ", 1)[1].split()[0])
    assert max_diff < 1e-4
    repo = Repo.open(tmp_path / "repo")
    merge = repo.commit_object("main")
    assert merge.op.method == "mean_ba" and merge.parents == [repo.resolve("class/dog"), repo.resolve("class/cat")]
    assert repo.fsck().ok
