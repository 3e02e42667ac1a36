"""Preprocessing embedded in the graph (edgetl.exporter.embed): every way gives the float model's logits, bit
for bit, from uint8 frames."""
import numpy as np
import pytest

from edgetl.errors import ArtifactError
from edgetl.exporter.embed import embed_input, quantize_table
from edgetl.runtime import ort_session
from edgetl.runtime.preprocess import Preprocess

LITE = Preprocess(crop=8, resize=8, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
IMAGENET = Preprocess(crop=8, resize=8)


def _graph(quantized: bool, scale: float = 1 / 128, zero_point: int = 127, dtype=np.uint8):
    """input [N,3,8,8] float -> (QuantizeLinear -> DequantizeLinear ->) Conv 3->4 -> ReduceMean -> logits [N,4]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    nodes, x = [], "input"
    if quantized:
        inits += [numpy_helper.from_array(np.float32(scale), "s"), numpy_helper.from_array(np.asarray(zero_point, dtype), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x = "dq"
    nodes += [helper.make_node("Conv", [x, "w"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("ReduceMean", ["c", "axes"], ["logits"], keepdims=0)]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _frames(n=6) -> np.ndarray:
    f = np.random.default_rng(1).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    f[0] = np.arange(192).reshape(8, 8, 3)  # every level somewhere
    f[1] = np.arange(64, 256).reshape(8, 8, 3)
    return f


def _both(proto, pp, **kw):
    """(what embed_input did, the float model's logits on normalised frames, the embedded one's on the frames)."""
    import onnx

    frames = _frames()
    before = ort_session(proto.SerializeToString()).run(None, {"input": pp.normalize(frames)})[0]
    info = embed_input(proto, pp, **kw)
    onnx.checker.check_model(proto, full_check=True)
    sess = ort_session(proto.SerializeToString())
    inp = sess.get_inputs()[0]
    assert inp.type == "tensor(uint8)" and inp.shape == ["batch", 8, 8, 3]
    return info, before, sess.run(None, {"input": frames})[0]


def test_lite_with_a_min_max_input_range_takes_the_frame_as_the_quantized_input():
    info, before, after = _both(_graph(True), LITE)
    assert info["method"].startswith("quantized input: the frame itself")
    np.testing.assert_array_equal(after, before)


def test_other_normalisations_and_ranges_look_each_channel_up_in_a_table():
    for pp, scale, zp, dtype in ((IMAGENET, 0.0185, 120, np.uint8), (LITE, 0.0071, 131, np.uint8),
                                 (IMAGENET, 0.0185, -8, np.int8)):
        info, before, after = _both(_graph(True, scale, zp, dtype), pp)
        assert info["method"] == "quantized input: a table of quantized values per grey level"
        np.testing.assert_array_equal(after, before)


def test_the_table_is_onnxruntimes_own_quantization_of_the_normalised_levels():
    t = quantize_table(IMAGENET, np.float32(0.0185), np.uint8(120))
    levels = IMAGENET.normalize(np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2))[:, :, 0]
    assert t.shape == (3, 256) and t.dtype == np.uint8
    np.testing.assert_array_equal(t, np.clip(np.rint(levels / np.float32(0.0185)) + 120, 0, 255))
    assert not np.array_equal(t[0], t[2])  # ImageNet's per-channel mean and std


def test_a_float_input_model_gets_the_reference_formula_bit_for_bit():
    info, before, after = _both(_graph(False), IMAGENET)
    assert info["method"].startswith("float")
    np.testing.assert_array_equal(after, before)


def _qoperator_graph():
    """input -> QuantizeLinear -> QLinearConv -> DequantizeLinear -> ReduceMean: onnxruntime's QOperator format."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    f = lambda name, v: numpy_helper.from_array(np.asarray(v), name)  # noqa: E731
    inits = [f("s", np.float32(0.0185)), f("z", np.uint8(120)), f("w", rng.integers(-60, 60, (4, 3, 3, 3), dtype=np.int8)),
             f("ws", np.float32(0.01)), f("wz", np.int8(0)), f("ys", np.float32(0.05)), f("yz", np.uint8(128)),
             f("axes", np.array([2, 3], np.int64))]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
             helper.make_node("QLinearConv", ["q", "s", "z", "w", "ws", "wz", "ys", "yz"], ["qc"], pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["qc", "ys", "yz"], ["c"]),
             helper.make_node("ReduceMean", ["c", "axes"], ["logits"], keepdims=0)]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_a_qoperator_int8_graph_gets_the_table_too():
    info, before, after = _both(_qoperator_graph(), IMAGENET)
    assert info["method"] == "quantized input: a table of quantized values per grey level"
    np.testing.assert_array_equal(after, before)


def test_the_float_path_where_a_table_would_not_be_the_same_model():
    """A per-axis input quantizer, an input that feeds more than the quantizer, and the tensorrt preset (whose
    importer wants its Q/DQ pairs: keep_quantizer) all take the reference formula, still bit for bit."""
    from onnx import helper, numpy_helper

    per_axis = _graph(True)
    for t in per_axis.graph.initializer:
        if t.name in ("s", "z"):
            t.CopyFrom(numpy_helper.from_array(np.repeat(numpy_helper.to_array(t), 3), t.name))
    for n in per_axis.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            n.attribute.append(helper.make_attribute("axis", 1))
    two_users = _graph(True)
    two_users.graph.node.append(helper.make_node("Shape", ["input"], ["input_shape"]))
    two_users.graph.output.append(helper.make_tensor_value_info("input_shape", 7, [4]))
    for proto, keep in ((per_axis, False), (two_users, False), (_graph(True), True)):
        info, before, after = _both(proto, LITE, keep_quantizer=keep)
        assert info["method"].startswith("float")
        np.testing.assert_array_equal(after, before)


def test_names_the_graph_already_uses_are_not_reused():
    from onnx import helper

    proto = _graph(False)
    proto.graph.node.insert(0, helper.make_node("Identity", ["w"], ["frames_nchw"]))  # a tensor named like ours
    _, before, after = _both(proto, IMAGENET)
    np.testing.assert_array_equal(after, before)


def test_a_model_without_a_float_input_named_input_is_refused():
    proto = _graph(False)
    proto.graph.input[0].name = "pixels"
    with pytest.raises(ArtifactError, match="no float input named 'input'"):
        embed_input(proto, IMAGENET)
