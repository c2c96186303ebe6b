"""Summarise py-spy's raw (collapsed) output: the frames with the most samples, own and inclusive.

    python -m bench.cuda.spy_top FILE.txt [--top 25] [--skip SUBSTRING ...] [--threads]

With `--threads` (for `py-spy record --threads`), each thread is summarised on its own, its
sample count first: against the recording's rate x duration, that is how busy it was.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--skip", nargs="*", default=["load_model"], help="drop stacks containing these")
    ap.add_argument("--threads", action="store_true", help="the first frame names a thread")
    args = ap.parse_args(argv)
    own: defaultdict[str, Counter[str]] = defaultdict(Counter)
    incl: defaultdict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    with open(args.file) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not n.isdigit() or any(s in stack for s in args.skip):
                continue
            frames = stack.split(";")
            group = frames.pop(0) if args.threads and len(frames) > 1 else "all"
            totals[group] += int(n)
            own[group][frames[-1]] += int(n)
            for fr in set(frames):
                incl[group][fr] += int(n)
    for group, total in totals.most_common():
        print(f"== {group}: {total} samples")
        for name, c in (("own", own[group]), ("incl", incl[group])):
            for fr, n in c.most_common(args.top):
                print(f"{100 * n / max(1, total):5.1f}% {name:4} {fr[:140]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
