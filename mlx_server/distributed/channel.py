"""Rank 0 tells the other ranks what to do, over MLX's own collectives.

A broadcast is an `all_sum` to which only rank 0 contributes: it works on every backend
MLX has (ring, JACCL, MPI, NCCL) and needs no second connection between the hosts. A
fixed-size frame carries a typical step's inputs in one collective; a longer message
takes a second one sized from the frame's header. (mlx_lm.server shares requests the
same way.)
"""

from __future__ import annotations

import pickle
from typing import Any

import mlx.core as mx
import numpy as np

FRAME_WORDS = 2048  # int32 words: 8 KiB, of which the first word is the message length
_FRAME_BYTES = (FRAME_WORDS - 1) * 4


class Broadcast:
    """Send a Python object from rank 0 to every rank of `group`, in call order.

    Every rank must call `share` the same number of times; the ranks are our own
    processes started by one launch line, so messages are pickled.
    """

    def __init__(self, group: mx.distributed.Group):
        self.group = group
        self.rank = group.rank()
        self.size = group.size()

    def share(self, obj: Any = None, stream: Any = None) -> Any:
        """Rank 0 passes the object and gets it back; the other ranks pass nothing.

        `stream`: where the model's own collectives run. Collectives on two streams can
        pair up in a different order on each rank, so the message queues behind them.
        """
        if self.size == 1:
            return obj
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if self.rank == 0 else b""
        frame = np.zeros(FRAME_WORDS, dtype=np.int32)
        if self.rank == 0:
            frame[0] = len(data)
            head = data[:_FRAME_BYTES]
            frame[1:] = _words(head, FRAME_WORDS - 1)
        got = self._all_sum(frame, stream)
        n = int(got[0])
        payload = got[1:].tobytes()[: min(n, _FRAME_BYTES)]
        if n > _FRAME_BYTES:
            rest = n - _FRAME_BYTES
            words = -(-rest // 4)
            tail = _words(data[_FRAME_BYTES:], words) if self.rank == 0 else np.zeros(words, np.int32)
            payload += self._all_sum(tail, stream).tobytes()[:rest]
        return obj if self.rank == 0 else pickle.loads(payload)

    def _all_sum(self, words: np.ndarray, stream: Any) -> np.ndarray:
        out = mx.distributed.all_sum(mx.array(words), group=self.group, stream=stream)
        mx.eval(out)
        return np.array(out, dtype=np.int32)


def _words(data: bytes, n_words: int) -> np.ndarray:
    """`data` zero-padded to `n_words` int32 words."""
    return np.frombuffer(data.ljust(n_words * 4, b"\0"), dtype=np.int32)
