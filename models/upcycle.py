"""Initialise an MoE model from a dense one of the same arch ("upcycling").

Every expert starts as a copy of the dense module it replaces; every other weight (stem,
trunk, head) is copied as it is; gate weights and centroids, which have no dense
counterpart, keep their initialisation. In state-dict names, expert e of a layer adds
`experts.<e>.` to the dense name (`modelfile.naming.dense_name` takes it out):

    stages.2.experts.3.0.conv1.weight   <- stages.2.0.conv1.weight       (CNN stage)
    blocks.1.mlp.experts.0.fc1.weight   <- blocks.1.mlp.fc1.weight       (ViT MLP)

With identical experts the MoE model computes exactly the dense function, whatever the
routing: the starting point of the Cluster MoE recipe.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from modelfile.naming import dense_name


def upcycle_state_dict(moe_model: nn.Module, dense_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The MoE model's state dict with every entry that has a dense counterpart replaced by it.

    Raises:
        ValueError: a dense entry has no place in the MoE model, or shapes differ (the two
            models are not the same arch and options).
    """
    state = moe_model.state_dict()
    used = set()
    for name, value in state.items():
        source = name if name in dense_state else dense_name(name)
        if source not in dense_state:
            continue
        if tuple(dense_state[source].shape) != tuple(value.shape):
            raise ValueError(f"dense {source} has shape {tuple(dense_state[source].shape)}, "
                             f"MoE {name} has {tuple(value.shape)}")
        state[name] = dense_state[source].detach().clone()
        used.add(source)
    unused = sorted(set(dense_state) - used)
    if unused:
        raise ValueError(f"dense weights with no place in the MoE model (different arch or "
                         f"options?): {', '.join(unused[:3])}{' ...' if len(unused) > 3 else ''}")
    return state


def load_dense_into_moe(moe_model: nn.Module, dense_state: Mapping[str, Tensor]) -> None:
    """Copy the dense weights into `moe_model` in place (see `upcycle_state_dict`)."""
    moe_model.load_state_dict(upcycle_state_dict(moe_model, dense_state))
