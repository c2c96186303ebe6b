"""Summarise py-spy's raw (collapsed) output: the frames with the most samples, own and inclusive.

    python -m bench.cuda.spy_top FILE.txt [--top 25] [--skip SUBSTRING ...]
"""

from __future__ import annotations

import argparse
from collections import Counter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--skip", nargs="*", default=["load_model"], help="drop stacks containing these")
    args = ap.parse_args(argv)
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    with open(args.file) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not n.isdigit() or any(s in stack for s in args.skip):
                continue
            frames = stack.split(";")
            total += int(n)
            own[frames[-1]] += int(n)
            for fr in set(frames):
                incl[fr] += int(n)
    print(f"{total} samples")
    for name, c in (("own", own), ("incl", incl)):
        for fr, n in c.most_common(args.top):
            print(f"{100 * n / max(1, total):5.1f}% {name:4} {fr[:140]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
