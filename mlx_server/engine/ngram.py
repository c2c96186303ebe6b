"""Prompt-lookup drafting: propose the tokens that followed the last n-gram's previous occurrence.

Costs nothing but a dictionary per sequence, and pays off when the output repeats its
input (code edits, retrieval answers, quoting) or itself.
"""

from __future__ import annotations


class NgramIndex:
    """The latest earlier occurrence of every n-gram (sizes `min_n`..`max_n`) of one sequence.

    Keys end one token before the sequence's end, so a lookup of the current suffix never
    finds the suffix itself.
    """

    def __init__(self, tokens: list[int], max_n: int = 3, min_n: int = 1):
        self.max_n = max(1, max_n)
        self.min_n = max(1, min(min_n, self.max_n))
        self.tokens: list[int] = []
        self._ends: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        for t in tokens:
            end = len(self.tokens) - 1  # the token before t stops being the last one
            if end >= 0:
                for n in range(self.min_n, self.max_n + 1):
                    if end - n + 1 < 0:
                        break
                    self._ends[tuple(self.tokens[end - n + 1: end + 1])] = end
            self.tokens.append(t)

    def propose(self, k: int) -> list[int]:
        """Up to `k` tokens that followed the latest earlier match of the longest suffix."""
        seq = self.tokens
        if k <= 0:
            return []
        for n in range(min(self.max_n, len(seq) - 1), self.min_n - 1, -1):
            end = self._ends.get(tuple(seq[len(seq) - n:]))
            if end is not None:
                return seq[end + 1: end + 1 + k]
        return []
