"""The recurrent layers reuse their internal buffers from one forward to the next:
results must not depend on what an earlier call left in them."""
import copy

import numpy as np
import pytest

from fusedlearn import nn


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_repeated_calls_match_a_fresh_layer(kind):
    rng = np.random.default_rng(0)
    layer = getattr(nn, kind)(5, 7, num_layers=2, bidirectional=True, generator=1)
    fresh = copy.deepcopy(layer)
    shapes = [(6, 3), (6, 3), (4, 2), (6, 3)]  # same shape twice (reuse), then a new shape, then back
    for T, B in shapes:
        x = rng.standard_normal((T, B, 5)).astype(np.float32)
        g = rng.standard_normal((T, B, 14)).astype(np.float32)
        layer.zero_grad()
        out, _ = layer(x)
        dx = layer.backward(g)
        ref = copy.deepcopy(fresh)  # never called before: allocates everything anew
        ref.zero_grad()
        out_ref, _ = ref(x)
        dx_ref = ref.backward(g)
        np.testing.assert_array_equal(out, out_ref)
        np.testing.assert_array_equal(dx, dx_ref)
        for (name, p), (_, q) in zip(layer.named_parameters(), ref.named_parameters()):
            np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


def test_outputs_are_not_overwritten_by_the_next_forward():
    layer = nn.GRU(3, 4)
    x1 = np.ones((5, 2, 3), np.float32)
    out1, h1 = layer(x1)
    keep_out, keep_h = out1.copy(), h1.copy()
    layer(np.zeros((5, 2, 3), np.float32))
    np.testing.assert_array_equal(out1, keep_out)
    np.testing.assert_array_equal(h1, keep_h)
