"""Sparse expert dispatch: each row runs only through the experts it is routed to.

    y_r = sum_{e : mask[r, e]} weights[r, e] * E_e(x_r)

as a loop over the static `range(E)`: select the routed rows of expert e (nonzero +
index_select), run E_e on them, scale, and scatter back (index_add). An expert no row is routed
to runs on an empty batch, i.e. does no work; no Python branch depends on tensor values, so
the loop traces and exports to ONNX as NonZero / Gather / ScatterND with every expert kept.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from models.gating import Routing


def sparse_dispatch(x: Tensor, routing: Routing, experts: Sequence[nn.Module],
                    out_shape: Sequence[int | torch.SymInt]) -> Tensor:
    """Mix expert outputs row by row.

    Args:
        x: (R, ...) rows to dispatch (images, tokens or slots).
        routing: weights and mask, each (R, E).
        experts: E modules, each mapping (n, ...) to (n, *out_shape[1:]).
        out_shape: shape of the result, (R, ...), known before any expert runs.

    Returns:
        (R, *out_shape[1:]) tensor; rows routed to no expert are zero.
    """
    y = x.new_zeros(out_shape)
    for e, expert in enumerate(experts):
        index = routing.mask[:, e].nonzero().flatten()
        out = expert(x.index_select(0, index))
        scale = routing.weights.index_select(0, index)[:, e]
        out = out * scale.reshape((-1,) + (1,) * (out.dim() - 1)).to(out.dtype)
        y = y.index_add(0, index, out)
    return y
