"""Preprocessing inside the graph (``--embed-preprocess``): a float-input model becomes one that takes the uint8
frame [N, H, W, 3] the camera pipeline ends with, for every variant (fp32, int8, fp16), proven equal.

    info = embed_input(proto, pp)        # in place; info["method"] says which way below

- the model quantizes its input first (int8: every consumer of ``input`` is one QuantizeLinear): the frame is
  looked up per channel in a 256-entry table of the quantized values that normalising then quantizing gives
  (computed by onnxruntime's own QuantizeLinear on ``Preprocess``'s float table, so bit for bit the float
  path's), and when that table is the identity -- Lite's mean 127/255 and std 128/255 with a min-max input
  range give exactly scale 1/128, zero point 127 -- the frame *is* the quantized input: a transpose, no op
  on a pixel (the float path instead with ``keep_quantizer``: TensorRT's importer wants its Q/DQ pairs);
- otherwise: Cast, /255, -mean, /std, the reference formula's float32 operations in its order (bit for bit
  ``Preprocess.normalize``).

The transpose to NCHW sits right before the first convolution (the table is looked up in NHWC), where
onnxruntime's layout optimizer can cancel it against the NHWC transpose its int8 convolutions insert.
``embed_variants`` proves each result: the float model's logits on ``Preprocess.normalize`` of the held-out
frames, from the frames (Lite0: identical, max |diff| 0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._progress import Progress
from ..errors import ArtifactError
from ..runtime.bundle import META_PREFIX, VARIANT_FILES
from ..runtime.preprocess import Preprocess
from .source import Source

INPUT = "input"


def _const(graph, name: str, array: np.ndarray) -> str:
    from onnx import numpy_helper

    graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    return name


def quantize_table(pp: Preprocess, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """[3, 256]: onnxruntime's QuantizeLinear of each channel's normalised grey levels (the int8 model's
    first op on the float path), in the zero point's dtype."""
    import onnx
    from onnx import TensorProto, helper

    from ..runtime import ort_session

    zp_type = helper.np_dtype_to_tensor_dtype(zero_point.dtype)
    g = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 256])],
        [helper.make_tensor_value_info("q", zp_type, [3, 256])],
        [onnx.numpy_helper.from_array(np.asarray(scale, np.float32), "s"),
         onnx.numpy_helper.from_array(np.asarray(zero_point), "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return ort_session(m.SerializeToString()).run(None, {"x": pp.levels})[0]


def _input_quantizer(graph):
    """The one QuantizeLinear every consumer of the input is (per-tensor constant scale and zero point), with
    its scale and zero point; None when the input is used otherwise."""
    from onnx import numpy_helper

    users = [n for n in graph.node if INPUT in n.input]
    if len(users) != 1 or users[0].op_type != "QuantizeLinear" or users[0].input[0] != INPUT or len(users[0].input) < 3:
        return None
    init = {t.name: t for t in graph.initializer}
    q = users[0]
    if q.input[1] not in init or q.input[2] not in init:
        return None
    scale, zp = numpy_helper.to_array(init[q.input[1]]), numpy_helper.to_array(init[q.input[2]])
    if scale.size != 1 or zp.size != 1 or zp.dtype not in (np.uint8, np.int8):  # per-axis, 16- or 4-bit: float path
        return None
    return q, scale, zp


def embed_input(proto, pp: Preprocess, *, keep_quantizer: bool = False) -> dict:
    """Make ``proto`` (a float NCHW input named ``input``) take uint8 NHWC frames; returns what was done.
    ``keep_quantizer``: the float path even where a table would do (TensorRT's importer wants its Q/DQ pairs)."""
    from onnx import TensorProto, helper

    graph = proto.graph
    old = next((i for i in graph.input if i.name == INPUT), None)
    if old is None or old.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ArtifactError("cannot embed preprocessing: the model has no float input named 'input'")
    dims = old.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ArtifactError(f"cannot embed preprocessing: the input has {len(dims)} dimensions, not N x 3 x H x W")
    batch = dims[0].dim_param or dims[0].dim_value or "batch"
    h, w = (d.dim_value or pp.crop for d in dims[2:])
    name = _namer(graph)
    nodes, info = [], {}
    quant = None if keep_quantizer else _input_quantizer(graph)
    if quant is not None:
        q, scale, zp = quant
        table = quantize_table(pp, scale.reshape(()), zp.reshape(()))
        target = q.output[0]
        graph.node.remove(q)
        if zp.dtype == np.uint8 and all(np.array_equal(t, np.arange(256)) for t in table):
            frames = INPUT  # the frame is the quantized input
            info["method"] = "quantized input: the frame itself (the quantization table is the identity)"
        else:  # looked up in the NHWC layout, so the transpose stays next to the first convolution
            idx = _cast(nodes, INPUT, name("frames_i32"), TensorProto.INT32)
            if not all(np.array_equal(t, table[0]) for t in table):  # per-channel: channel c's table at 256c
                off = _const(graph, name("embed_channel_offset"), np.arange(3, dtype=np.int32) * 256)
                nodes.append(helper.make_node("Add", [idx, off], [name("frames_table_index")]))
                idx, flat = nodes[-1].output[0], table.reshape(-1)
            else:
                flat = table[0]
            lut = _const(graph, name("embed_quant_table"), flat.astype(zp.dtype))
            frames = name("frames_quantized")
            nodes.append(helper.make_node("Gather", [lut, idx], [frames], axis=0))
            info["method"] = "quantized input: a table of quantized values per grey level"
        nodes.append(helper.make_node("Transpose", [frames], [target], perm=[0, 3, 1, 2], name=name("embed_to_nchw")))
        info.update(input_scale=float(scale.reshape(())), input_zero_point=int(zp.reshape(())))
    else:
        nchw = name("frames_nchw")
        nodes.append(helper.make_node("Transpose", [INPUT], [nchw], perm=[0, 3, 1, 2], name=name("embed_to_nchw")))
        x = _cast(nodes, nchw, name("frames_f32"), TensorProto.FLOAT)
        nodes.append(helper.make_node("Div", [x, _const(graph, name("embed_255"), np.float32(255.0))], [name("frames_01")]))
        mean = _const(graph, name("embed_mean"), np.asarray(pp.mean, np.float32).reshape(1, 3, 1, 1))
        std = _const(graph, name("embed_std"), np.asarray(pp.std, np.float32).reshape(1, 3, 1, 1))
        nodes.append(helper.make_node("Sub", [nodes[-1].output[0], mean], [name("frames_centred")]))
        normalized = name("input_normalized")
        nodes.append(helper.make_node("Div", [nodes[-1].output[0], std], [normalized]))
        for n in graph.node:
            for i, x_in in enumerate(n.input):
                if x_in == INPUT:
                    n.input[i] = normalized
        info["method"] = "float: cast, /255, -mean, /std (the reference formula)"
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info(INPUT, TensorProto.UINT8, [batch, h, w, 3]))
    for n in reversed(nodes):
        graph.node.insert(0, n)
    for p in proto.metadata_props:  # an edgetl model now says what it takes
        if p.key == META_PREFIX + "embed_preprocess":
            p.value = "true"
    return info


def _namer(graph):
    """A name not yet used by the graph's tensors, initializers or nodes (the given one when free)."""
    used = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {n.name for n in graph.node} | \
        {o for n in graph.node for o in n.output} | {v.name for v in graph.value_info}

    def name(base: str) -> str:
        out, k = base, 1
        while out in used:
            out, k = f"{base}_{k}", k + 1
        used.add(out)
        return out

    return name


def _cast(nodes: list, src: str, dst: str, to: int) -> str:
    from onnx import helper

    nodes.append(helper.make_node("Cast", [src], [dst], to=to))
    return dst


EMBED_TOLERANCE = 1e-5  # max |logit diff|, embedded on frames vs float on their normalisation, * max(1, max |logit|)


def embed_variants(stage: Path, src: Source, progress: Progress, *, keep_quantizer: bool = False) -> dict:
    """Embed preprocessing in every model file of ``stage`` (all proven first on the float input), each proven
    to give the float model's logits on the held-out frames; returns {variant: method and figures}.
    ``keep_quantizer``: see ``embed_input`` (the tensorrt preset)."""
    import onnx

    from ..quantization.recipes import logits
    from .onnx_graph import check_onnx

    out = {}
    present = [(v, f) for v, f in VARIANT_FILES.items() if (stage / f).is_file()]
    with progress.task("embed preprocessing in the graph", total=len(present)) as adv:
        for v, f in present:
            proto = onnx.load(str(stage / f))
            before = logits(proto.SerializeToString(), src.floats)
            info = embed_input(proto, src.pp, keep_quantizer=keep_quantizer)
            proto = check_onnx(proto, f"{src.ck_path} ({v}, preprocessing embedded)")
            after = logits(proto.SerializeToString(), src.frames)
            diff = float(np.max(np.abs(after - before)))
            agree = float(np.mean(after.argmax(1) == before.argmax(1)))
            tol = EMBED_TOLERANCE * max(1.0, float(np.max(np.abs(before))))
            if diff > tol or agree < 1.0:
                raise ArtifactError(f"embedding preprocessing changed the {v} model's logits on {src.data_dir}'s "
                                    f"images (max |diff| {diff:.3g} > {tol:.3g}, top-1 agreement {agree:.3f}); "
                                    f"nothing was written. Export without --embed-preprocess")
            onnx.save(proto, str(stage / f))
            out[v] = {**info, "max_abs_diff_vs_float_input": diff, "images": len(src.frames)}
            adv(1)
    return out

