"""Which commit a generated report measured: `git rev-parse HEAD`, and
whether the work tree differed from it (tracked files only; the report
being written is left out, since writing it is what makes it differ).

Used by scripts/lib/bench.py and scripts/lib/resilience_report.py (and by
scripts/resilience through `python3 scripts/lib/provenance.py FILE`).
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _git(*args):
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def commit(generated=()):
    """`<40-hex sha>` or `<sha>-dirty` (with the changed paths, at most 5,
    in parentheses), or `unknown` outside a git checkout."""
    try:
        sha = _git("rev-parse", "HEAD").strip()
        excludes = [f":(exclude){g}" for g in generated]
        changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *excludes).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if not changed:
        return sha
    paths = [line[3:] for line in changed]
    more = f", +{len(paths) - 5} more" if len(paths) > 5 else ""
    return f"{sha}-dirty ({', '.join(paths[:5])}{more})"


if __name__ == "__main__":
    print(commit(sys.argv[1:]))
