"""Which int8 candidates to build for a graph: what the graph holds (depthwise, ReLU6, equalizable pairs,
slow-in-int8 ops) and the recipes that follow, first the cheap ones, then the costlier ones.

    facts = GraphFacts(onnx.load("pre.onnx"), preset)
    first_recipes(preset, opts, facts, n_calib=200, on_host=True)      # -> [Recipe, ...]
    second_recipes(base_recipe, preset, opts, facts, n_calib=500)
"""
from __future__ import annotations

import dataclasses

from .presets import QuantOptions, QuantPreset
from .recipes import Recipe, _group


class GraphFacts:
    """What the (pre-processed) fp32 graph holds that decides the recipes."""

    def __init__(self, model, preset: QuantPreset):
        self.model, self.graph, self.preset = model, model.graph, preset

    def has_depthwise(self) -> bool:
        return any(n.op_type == "Conv" and _group(n) > 1 for n in self.graph.node)

    def equalizable(self) -> bool:
        """Whether cross-layer equalization has an exact pair here (Conv -> [Relu] -> Conv; ReLU6 nets
        such as EfficientNet-Lite have only the few linear project -> expand ones)."""
        from .recipes import equalize

        return equalize(self.model, iterations=0) >= 2  # (0 iterations: count the pairs, change nothing)

    def clipped(self) -> bool:
        """Whether most convolutions end in a Clip (ReLU6): no activation outlier can pass 6 there, so
        percentile calibration has nothing to cut (measured: Lite0 minmax and percentile equal)."""
        consumers: dict[str, list] = {}
        for n in self.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n.op_type)
        convs = [n for n in self.graph.node if n.op_type == "Conv"]
        return bool(convs) and sum("Clip" in consumers.get(n.output[0], []) for n in convs) > len(convs) / 2

    def float_op_nodes(self) -> list[str]:
        """The nodes of the preset's slow-in-int8 op types, when the graph has activation or gating ops
        among them (a graph whose only such ops are Add and pooling ran slower with them in float)."""
        ops = set(self.preset.op_types_float)
        nodes = [n for n in self.graph.node if n.op_type in ops]
        if not any(n.op_type not in ("Add", "GlobalAveragePool") for n in nodes):
            return []
        return [n.name for n in nodes]


def first_recipes(p: QuantPreset, opts: QuantOptions, facts: GraphFacts, *, n_calib: int,
                  on_host: bool) -> list[Recipe]:
    """Every layer int8, made the ways this target's kernels run fastest and most exactly. Bias
    correction is one cheap fp32 pass, so the first round has it too."""
    method = "minmax" if opts.calib_method == "auto" else opts.calib_method
    base = Recipe("int8", p.formats[0], reduce_range=p.reduce_range, calib_method=method, calib_size=n_calib,
                  per_channel=opts.per_channel, why="all layers int8")
    out = [base, dataclasses.replace(base, fmt="QDQ", bias_correction=True, why="all layers int8, bias correction")]
    if p.depthwise_8bit and p.reduce_range and opts.per_channel and facts.has_depthwise():  # AVX2
        dw = dataclasses.replace(base, name="dw8", fmt="QDQ", depthwise_8bit=True,
                                 why="all layers int8, depthwise kernels in full 8 bits")
        out = [dw, dataclasses.replace(dw, bias_correction=True, why=dw.why + ", bias correction"), base]
    if on_host and len(p.formats) > 1 and not any(r.fmt == p.formats[1] for r in out):
        out.append(dataclasses.replace(base, fmt=p.formats[1]))
    return out


def second_recipes(base: Recipe, p: QuantPreset, opts: QuantOptions, facts: GraphFacts, *, n_calib: int,
                   n_available: int) -> list[Recipe]:
    """Costlier variations of the most faithful first recipe ``base``, for when the target was missed."""
    r = dataclasses.replace(base, exclude=(), why="")
    out = []
    if opts.calib_method == "auto" and not facts.clipped():  # (ReLU6 caps every range at 6 anyway)
        out.append(dataclasses.replace(r, calib_method="percentile", why="percentile calibration"))
        if n_available > n_calib:
            out.append(dataclasses.replace(r, calib_size=n_available, why=f"{n_available} calibration images"))
    if facts.equalizable():
        out.append(dataclasses.replace(r, cle=True, why="cross-layer equalization"))
    if p.name.startswith("x86") and p.reduce_range:
        out.append(dataclasses.replace(r, name="u8u8", all_u8=True, depthwise_8bit=False, reduce_range=False,
                                       fmt="QDQ", why="all weights 8-bit uint8 (U8U8: no saturation, slower)"))
    return out
