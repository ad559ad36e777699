"""Every artefact file damaged three ways, each through the real command line: does the
command give one clean line (or still read the file whole), never a traceback?

For each file of a work directory's current model and graph versions, and each damage
(``empty``: zero bytes; ``half``: cut to half its length; ``garbage``: ten bytes of junk), a
private copy of the work directory gets the damage and runs `graphrec recommend` (model files)
or `graphrec train --epochs 1` (graph files) in a process of its own.

    python experiments/damage_artefacts.py --workdir graphrec-run

Prints one line per case and the counts: clean error, read whole (exit 0), defect.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from graphrec.fsio import resolve_version  # noqa: E402

DAMAGES = {"empty": lambda b: b"", "half": lambda b: b[:len(b) // 2],
           "garbage": lambda b: b"\x00garbage{["}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True, help="a trained work directory")
    args = p.parse_args()
    user = (args.workdir / "model" / "users.txt").read_text().split()[0]
    counts = {"clean error": 0, "read whole": 0, "defect": 0}
    scratch = Path(tempfile.mkdtemp(prefix="graphrec-damage-"))
    for kind, command in (("model", ["recommend", "--user", user]),
                          ("graph", ["train", "--epochs", "1", "--dim", "8"])):
        source, _ = resolve_version(args.workdir / kind)
        for name in sorted(p.name for p in source.iterdir() if p.is_file()):
            for how, damage in DAMAGES.items():
                work = scratch / "w"
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(args.workdir, work, ignore=shutil.ignore_patterns(
                    "cache", "model-synthetic-*", ".lock"))  # links followed: a plain copy
                target = work / kind / name
                target.write_bytes(damage(target.read_bytes()))
                r = subprocess.run([sys.executable, "-m", "graphrec_cli.main", "--workdir",
                                    str(work), *command], capture_output=True, text=True,
                                   timeout=600, cwd=ROOT)
                lines = r.stderr.strip().splitlines()
                clean = r.returncode == 1 and lines and lines[-1].startswith("error: ") \
                    and "Traceback" not in r.stderr
                outcome = ("clean error" if clean else "read whole" if r.returncode == 0
                           else "defect")
                counts[outcome] += 1
                print(f"{kind}/{name} {how}: {outcome}"
                      + (f" ({lines[-1][:120]})" if lines and outcome != "read whole" else ""),
                      flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{sum(counts.values())} cases: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
