"""Class swaps keyed on a layer's exact source line (engine/class_swap.py)."""

import mlx.core as mx
from mlx import nn

from mlx_server.engine.class_swap import ClassSwap, revert


class Plus(nn.Module):
    def __call__(self, x):
        return x + 1


class PlusTwoLines(nn.Module):
    def __call__(self, x):
        y = x + 1  # the same line, but not the whole body
        return y


class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Plus()
        self.b = PlusTwoLines()
        self.c = [Plus()]


def test_only_the_exact_body_is_swapped_and_undone():
    swap = ClassSwap("return x + 1", lambda self, x: x + 10)
    m = Holder()
    seen = []
    assert swap.install(m, prepare=seen.append) == 2  # a and c[0], not b
    assert seen == [m.a, m.c[0]] or seen == [m.c[0], m.a]
    assert m.a(mx.array(1)).item() == 11 and m.c[0](mx.array(1)).item() == 11
    assert m.b(mx.array(1)).item() == 2
    assert isinstance(m.a, Plus)  # a subclass: isinstance checks elsewhere still hold
    assert swap.install(m) == 0  # already swapped
    object.__setattr__(m.a, "_cached", 1)
    assert swap.uninstall(m, forget=("_cached",)) == 2
    assert type(m.a) is Plus and "_cached" not in m.a.__dict__
    assert m.a(mx.array(1)).item() == 2


def test_revert():
    class Faster(Plus):
        def __call__(self, x):
            return x + 100

    m = Holder()
    m.a.__class__ = Faster
    object.__setattr__(m.a, "_state", 1)
    assert revert(m, Faster, forget=("_state",)) == 1
    assert type(m.a) is Plus and "_state" not in m.a.__dict__
    assert revert(m, Faster) == 0
