"""Active MACs and expert load of a model on real data, from the rows each MAC layer saw.

    rows_l(batch)  = leading dim of layer l's proxy tensor (`eval.graph`)
    MACs_l         = sum over batches of rows_l x macs_per_row_l
    load_{m, e}    = rows that reached expert e of MoE layer m (its first MAC layer)

`probe()` runs a copy of the model that returns the shapes of every MAC layer's operands and
output on a few images, which gives macs_per_row and K without trusting static shape
inference (expert branches have data-dependent shapes). `MacCounter.add()` takes the proxy
shapes of one batch of the instrumented model (`instrumented()`).

A layer the pass gave a `linear` compensation term (`axmoe.assignment` entry `linear_additions`,
per batch row) also does linear_rows_l x linear_additions_l additions and no multiplies
(`eval.power`): the summary lists them per layer and in total, only for models that have such a
term, so every other model's summary is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx

from eval.graph import GraphInfo, MacLayer, layer_label, node_attributes, reduction, with_shape_outputs
from modelfile import metadata as model_metadata
from eval.power import LayerWork, dense_macs_per_image, normalised_power, relative_power, weighted_macs

SessionFactory = Callable[[bytes], Any]


def probe(model: onnx.ModelProto, info: GraphInfo, x: np.ndarray, make_session: SessionFactory) -> None:
    """Set macs_per_row and reduction of every layer in `info` from one run on `x`. A layer
    whose proxy turns out not to share its output's leading dim is measured on its output."""
    tensors = []
    for layer in info.layers:
        tensors += [layer.activation, layer.weight, layer.output, layer.proxy]
    probed, names = with_shape_outputs(model, tensors)
    shape_of = dict(zip(dict.fromkeys(tensors), names))
    sess = make_session(probed.SerializeToString())
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {info.input_name: x})))
    for layer in info.layers:
        a, w, out, proxy = (tuple(int(d) for d in values[shape_of[t]])
                            for t in (layer.activation, layer.weight, layer.output, layer.proxy))
        attrs = node_attributes(model, layer.nodes[0])
        layer.reduction = reduction(layer.kind, attrs, a, w)
        layer.macs_per_row = int(np.prod(out[1:])) * layer.reduction if len(out) >= 2 else layer.reduction
        if len(proxy) == 0 or len(out) == 0 or proxy[0] != out[0]:
            layer.proxy = layer.output


def instrumented(model: onnx.ModelProto, info: GraphInfo) -> tuple[onnx.ModelProto, list[str]]:
    """The model plus one Shape output per distinct proxy, in `info.proxies()` order."""
    return with_shape_outputs(model, info.proxies())


@dataclass
class MacCounter:
    """Accumulates rows per proxy over batches; summarises MACs, load and power."""
    info: GraphInfo
    images: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # proxy tensor -> rows over all batches

    def add(self, batch_images: int, proxy_shapes: list[np.ndarray]) -> None:
        self.images += batch_images
        for proxy, shape in zip(self.info.proxies(), proxy_shapes):
            self.rows[proxy] = self.rows.get(proxy, 0) + (int(shape[0]) if len(shape) else 1)

    def layer_rows(self, layer: MacLayer) -> int:
        return self.rows.get(layer.proxy, 0)

    def work(self) -> list[LayerWork]:
        return [LayerWork(l.name, l.role, self.layer_rows(l) * int(l.macs_per_row or 0), l.multiplier)
                for l in self.info.layers]

    def expert_load(self) -> dict[str, dict[str, Any]]:
        """Per MoE layer: rows per expert, their shares, and balance statistics."""
        out = {}
        for prefix in self.info.moe_layers:
            experts = self.info.experts_of(prefix)
            if not experts:
                continue
            rows = [self.layer_rows(layers[0]) for _, layers in experts.items()]
            routers = self.info.routers_of(prefix)
            router_rows = self.layer_rows(routers[0]) if routers else None
            total = sum(rows)
            mean = total / len(rows) if rows else 0.0
            out[layer_label(prefix)] = {
                "prefix": prefix,
                "experts": list(experts),
                "rows": rows,
                "share": [r / total if total else 0.0 for r in rows],
                "router_rows": router_rows,
                "experts_per_row": total / router_rows if router_rows else None,
                "max_over_mean": max(rows) / mean if mean else None,
                "cv": float(np.std(rows) / mean) if mean else None,
            }
        return out

    def dense_per_image(self) -> float:
        """MACs per image of the dense counterpart (`eval.power.dense_macs_per_image`), with
        a MoE layer's rows per image read from its router. Exact for every CNN topology and
        for ViT dense, hard and cluster; a ViT Soft MoE expert sees p slots where the dense
        MLP sees every token, so there pass the dense model's own count (`--dense-macs`),
        as a sweep does."""
        if self.images == 0:
            return 0.0
        trunk = sum(w.macs for w in self.work() if w.role == "trunk") / self.images
        per_row, per_image = {}, {}
        for prefix in self.info.moe_layers:
            experts = self.info.experts_of(prefix)
            if not experts:
                continue
            first = experts[min(experts)]
            per_row[prefix] = float(sum(int(l.macs_per_row or 0) for l in first))
            routers = self.info.routers_of(prefix)
            if routers:
                per_image[prefix] = self.layer_rows(routers[0]) / self.images
        return dense_macs_per_image(trunk, per_row, per_image)

    def linear_additions(self) -> dict[str, int]:
        """Layer name -> additions of its linear compensation term over all batches (0 multiplies)."""
        text = (self.info.metadata or {}).get(model_metadata.ASSIGNMENT.name)
        assignment = model_metadata.ASSIGNMENT.decode(text) if text else {}
        return {l.name: self.layer_rows(l) * int(assignment[l.name]["linear_additions"]) for l in self.info.layers
                if "linear_additions" in assignment.get(l.name, {})}

    def summary(self, dense_per_image: float | None = None) -> dict[str, Any]:
        """MACs by role and multiplier, normalised power, per-layer detail, expert load (and the
        linear compensation term's additions, when the model has one)."""
        work = self.work()
        images = max(self.images, 1)
        inferred = self.dense_per_image()
        dense = dense_per_image if dense_per_image else inferred
        weighted, unknown = weighted_macs(work)
        by_role: dict[str, int] = {}
        by_mult: dict[str, int] = {}
        for w in work:
            by_role[w.role] = by_role.get(w.role, 0) + w.macs
            key = w.multiplier or "exact (not rewritten)"
            by_mult[key] = by_mult.get(key, 0) + w.macs
        active = sum(w.macs for w in work)
        linear = self.linear_additions()
        out = {
            "images": self.images,
            "normalised_power": normalised_power(work, self.images, dense) if self.images and dense else None,
            "unknown_power": unknown,
            "active_macs_per_image": active / images,
            "weighted_macs_per_image": weighted / images if weighted is not None else None,
            "dense_macs_per_image": dense,
            "dense_macs_inferred": inferred,
            "macs_by_role": by_role,
            "macs_by_multiplier": by_mult,
            "layers": [{"name": l.name, "role": l.role, "moe_layer": l.moe_layer, "expert": l.expert,
                        "op_type": l.op_type, "multiplier": l.multiplier, "lowering": l.lowering,
                        "relative_power": relative_power(l.multiplier), "reduction": l.reduction,
                        "macs_per_row": l.macs_per_row, "rows": self.layer_rows(l), "macs": w.macs}
                       for l, w in zip(self.info.layers, work)],
        }
        if linear:
            for layer in out["layers"]:
                if layer["name"] in linear:
                    layer["linear_additions"] = linear[layer["name"]]
            out["linear_additions_per_image"] = sum(linear.values()) / images
            out["linear_multiplies"] = 0
        return out
