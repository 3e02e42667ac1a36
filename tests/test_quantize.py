"""The int8 passes and the search, on tiny hand-made ONNX graphs (behaviour, not speed)."""
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetl.quantization.recipes import Recipe, channel_range_spread, equalize, logits, quantize
from edgetl.quantization.search import PRESETS, QuantOptions, pick_variant, quantize_model

AVX2 = PRESETS["x86-avx2"]


def _graph(nodes, inits, cin, side, out_shape, path):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, cin, side, side])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(a, n) for n, a in inits.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_bias_correction_makes_the_int8_output_mean_match_fp32(tmp_path):
    """Every weight sits 0.45 of a 7-bit step above the grid, so int8 rounds every one down and each
    output channel's mean drops by 0.45 * step * sum(inputs); bias correction folds that back."""
    rng = np.random.default_rng(0)
    step = 0.01
    w = (rng.integers(-30, 30, (4, 16, 1, 1)) + 0.45).astype(np.float32) * step
    w[:, 0] = 64 * step  # per-channel scale = max|w| / 64 (reduce_range): exactly `step`
    model = _graph([helper.make_node("Conv", ["input", "w", "b"], ["logits"], name="conv")],
                   {"w": w, "b": np.zeros(4, np.float32)}, 16, 4, [None, 4, 4, 4], tmp_path / "m.onnx")
    x = rng.uniform(0, 1, (64, 16, 4, 4)).astype(np.float32)  # positive, as after a ReLU
    ref = logits(model, x).mean(axis=(0, 2, 3))

    def shift(bc: bool) -> np.ndarray:
        out = tmp_path / f"q{bc}.onnx"
        quantize(model, out, x, Recipe("t", reduce_range=True, bias_correction=bc), AVX2, work=tmp_path)
        return logits(out, x).mean(axis=(0, 2, 3)) - ref

    before, after = shift(False), shift(True)
    assert np.all(before < -0.02), before  # the systematic drop is there ...
    assert np.all(np.abs(after) < 0.1 * np.abs(before)), (before, after)  # ... and gone


def test_cross_layer_equalization_keeps_the_function_and_evens_the_channels(tmp_path):
    rng = np.random.default_rng(1)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32)
    k = np.array([100, 0.01, 1, 30, 1, 0.1, 5, 1], np.float32)  # channel ranges far apart, same function
    w1, w2 = w1 * k.reshape(-1, 1, 1, 1), w2 / k.reshape(1, -1, 1, 1)
    b1 = (rng.normal(0, 0.1, 8) * k).astype(np.float32)
    path = _graph([helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
                   helper.make_node("Conv", ["r1", "w2"], ["logits"], name="conv2")],
                  {"w1": w1, "b1": b1, "w2": w2}, 3, 8, [None, 4, 8, 8], tmp_path / "m.onnx")
    x = rng.normal(0, 1, (8, 3, 8, 8)).astype(np.float32)
    m = onnx.load(str(path))
    spread = channel_range_spread(m)
    assert equalize(m) == 1
    onnx.save(m, str(tmp_path / "cle.onnx"))
    a, b = logits(path, x), logits(tmp_path / "cle.onnx", x)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
    assert channel_range_spread(m) < 0.2 * spread


def test_entropy_and_percentile_calibrate_on_any_number_of_images(tmp_path):
    """Histogram calibrators stack their batches: a short last batch crashed them ("inhomogeneous shape")."""
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    path = _graph([helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["c"], ["logits"], name="relu")], {"w": w}, 3, 16, [None, 4, 16, 16],
                  tmp_path / "m.onnx")
    x = rng.normal(0, 1, (21, 3, 16, 16)).astype(np.float32)  # not a multiple of the batch size
    x[0, 0, 0, 0] = 400.0  # one outlier pixel in 16128 values: minmax follows it, percentile 99.99 cuts it
    out = {}
    for method in ("minmax", "percentile", "entropy"):
        quantize(path, tmp_path / f"{method}.onnx", x, Recipe("t", calib_method=method), AVX2, work=tmp_path)
        inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / f"{method}.onnx")).graph.initializer}
        out[method] = float(inits["input_scale"])  # the graph input's activation scale
    assert out["percentile"] < 0.1 * out["minmax"] and 0 < out["entropy"] <= out["minmax"], out
    ref = logits(path, x[1:])
    for method in ("percentile", "entropy"):  # and the models they made run
        assert logits(tmp_path / f"{method}.onnx", x[1:]).shape == ref.shape


def _classifier(path, rng, fragile=False):
    w1 = rng.normal(0, 0.5, (16, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (3, 16)).astype(np.float32)
    if fragile:  # one huge weight in conv1 sets its channel's scale; the class hangs on the crushed rest
        w1[0, 0, 0, 0] = 80.0
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["r1"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w2"], ["logits"], name="head", transB=1)]
    return _graph(nodes, {"w1": w1, "w2": w2}, 3, 8, [None, 3], path)


def test_the_search_keeps_the_small_all_int8_variant_when_it_meets_the_target(tmp_path):
    rng = np.random.default_rng(3)
    fp32 = _classifier(tmp_path / "m.onnx", rng)
    calib = rng.normal(0, 1, (32, 3, 8, 8)).astype(np.float32)
    x = rng.normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    ref = logits(fp32, x)
    r = quantize_model(fp32, tmp_path / "int8.onnx", calib, x, ref.argmax(1), fp32_logits=ref,
                         opts=QuantOptions(min_agreement=0.9, report_sensitivity=False))
    assert r["parity"]["agreement_met"] and r["nodes_excluded"] == [] and r["stages"] == ["ptq"]
    assert r["method"].startswith("ptq:") and all("method" in c for c in r["candidates"])
    assert (tmp_path / "int8.onnx").stat().st_size < (tmp_path / "m.onnx").stat().st_size


def _fragile_model(path: Path, classifier: bool = False) -> Path:
    """conv1+clip -> conv2+clip -> conv3: conv2's weights hold one huge outlier, so int8 crushes its
    other output channels to zero. ``classifier``: 1x1 inputs and flat [N, 4] logits."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)
    w2[:, :, 0, 0] *= 0.01
    w2[0, 0, 0, 0] = 50.0  # per-output-channel scale set by one outlier: channel 0 is destroyed
    w3 = rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32)
    if classifier:  # the class then depends on the channels that int8 crushes, not on the outlier channel
        w3[:, 0], w3[:, 1:] = 0.0, w3[:, 1:] * 100
    init = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))]
    init += [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((0.0, "lo"), (6.0, "hi"))]
    last = "c3" if classifier else "logits"
    side = 1 if classifier else 8
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="clip1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="clip2"),
             helper.make_node("Conv", ["r2", "w3"], [last], name="conv3")]
    out_shape = [None, 4, 8, 8]
    if classifier:
        nodes.append(helper.make_node("Flatten", ["c3"], ["logits"], name="flat"))
        out_shape = [None, 4]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, side, side])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)], init)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_sensitivity_ranks_fused_layers_and_finds_the_fragile_one(tmp_path):
    """Conv+Clip count as one layer; the conv whose weights hold one huge outlier must come out as
    the most sensitive layer, with its fused Clip in `nodes`."""
    import numpy as np

    from edgetl.quantization.recipes import sensitivity

    pre = _fragile_model(tmp_path / "pre.onnx")
    x = np.random.default_rng(1).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    qdq = tmp_path / "qdq.onnx"
    quantize(pre, qdq, x, Recipe("t", reduce_range=True), AVX2, work=tmp_path)
    rows = sensitivity(pre, qdq, x, tmp_path)
    assert {r["node"] for r in rows} == {"conv1", "conv2", "conv3"}
    assert rows[0]["node"] == "conv2" and rows[0]["nodes"] == ["conv2", "clip2"]
    assert all(r["sqnr_loss_db"] == pytest.approx(r["sqnr_loss_db"]) for r in rows)  # finite, no NaN


def test_agreement_target_sends_the_fragile_layer_back_to_float(tmp_path, monkeypatch):
    """With no top-1 gate (max_drop 100), int8 that disagrees with fp32 is still refined: under
    min_agreement the most sensitive layer goes back to float (and a target still missed is reported);
    with the target off it stays int8."""
    import numpy as np

    # the search keeps, of the variants that miss the target, the most faithful one no slower than fp32; this
    # model runs in microseconds, where that timing is noise (it failed a CI run so): every int8 variant is
    # made as fast, so what is tested is the accuracy rule
    monkeypatch.setattr("edgetl.quantization.search.interleaved_latency",
                        lambda models, x, **kw: [2.0] + [1.0] * (len(models) - 1))

    fp32 = _fragile_model(tmp_path / "m.onnx", classifier=True)
    rng = np.random.default_rng(2)
    calib = rng.normal(0, 1, (32, 3, 1, 1)).astype(np.float32)
    x = rng.normal(0, 1, (128, 3, 1, 1)).astype(np.float32)
    ref = logits(fp32, x)
    y = ref.argmax(1)
    assert len(set(y.tolist())) > 1
    off = quantize_model(fp32, tmp_path / "off.onnx", calib, x, y, fp32_logits=ref,
                         opts=QuantOptions(max_drop=100, min_agreement=0.0, report_sensitivity=False))
    assert "conv2" not in off["nodes_excluded"] and off["parity"]["top1_agreement"] < 0.99, off["parity"]
    on = quantize_model(fp32, tmp_path / "on.onnx", calib, x, y, fp32_logits=ref,
                         opts=QuantOptions(max_drop=100, min_agreement=0.99, report_sensitivity=False))
    assert "conv2" in on["nodes_excluded"], on["nodes_excluded"]
    assert on["parity"]["top1_agreement"] > off["parity"]["top1_agreement"]
    assert on["parity"]["agreement_met"] == (on["parity"]["top1_agreement"] >= 0.99)
    if not on["parity"]["agreement_met"]:  # then it must say so, with the figure
        assert "--min-agreement" in on["verdict"] and f"{100 * on['parity']['top1_agreement']:.1f}%" in on["verdict"]


def test_variant_pick_fastest_then_smallest_file_within_noise():
    v = lambda name, ms, size: {"name": name, "p50_ms": ms, "size": size}  # noqa: E731
    # faster than fp32: the fastest, but a smaller file within 3% of it wins the tie
    assert pick_variant([v("qdq", 4.00, 110), v("qop", 4.10, 100), v("islands", 3.00, 120)], 5.0)["name"] == "islands"
    assert pick_variant([v("qdq", 4.00, 110), v("qop", 4.10, 100)], 5.0)["name"] == "qop"
    assert pick_variant([v("qdq", 4.00, 110), v("qop", 4.30, 100)], 5.0)["name"] == "qdq"
    # a tie never crosses fp32: the smaller file is slower than fp32, the faster one is not
    assert pick_variant([v("qdq", 4.95, 110), v("qop", 5.05, 100)], 5.0)["name"] == "qdq"
    # nothing beats fp32: near-smallest files are equally small, the fastest of them is kept
    assert pick_variant([v("qop", 4.21, 1000), v("islands", 4.56, 997), v("qdq", 4.15, 1065)], 4.0)["name"] == "qop"


def test_qat_export_is_a_qdq_model_that_onnxruntime_runs_like_its_torch_forward(tmp_path):
    """The torch module built from a QDQ model computes what onnxruntime computes on the same graph, before
    and after training steps; the export keeps the graph and writes new integers."""
    import torch

    from edgetl.quantization.qat import QDQModule

    rng = np.random.default_rng(4)
    fp32 = _classifier(tmp_path / "m.onnx", rng)
    x = rng.normal(0, 1, (32, 3, 8, 8)).astype(np.float32)
    quantize(fp32, tmp_path / "q.onnx", x, Recipe("t", reduce_range=True), AVX2, work=tmp_path)
    net = QDQModule(onnx.load(str(tmp_path / "q.onnx")))
    tol = 0.02  # of the largest logit: an activation rounding that lands 1 LSB apart (float sums vs int32)

    def check():
        onnx.save(net.to_onnx(), str(tmp_path / "qat.onnx"))
        with torch.no_grad():
            mine = net(torch.from_numpy(x)).numpy()
        ort = logits(tmp_path / "qat.onnx", x)
        assert np.abs(mine - ort).max() <= tol * np.abs(ort).max(), np.abs(mine - ort).max()
        assert np.mean(mine.argmax(1) == ort.argmax(1)) >= 0.95
        return ort

    before = check()
    np.testing.assert_array_equal(before, logits(tmp_path / "q.onnx", x))  # untrained: the same integers
    _train_a_little(net, x)
    after = check()
    assert not np.allclose(after, before)  # the weights did train
    ops = {n.op_type for n in onnx.load(str(tmp_path / "qat.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    w = [i for i in onnx.load(str(tmp_path / "qat.onnx")).graph.initializer if i.name.endswith("w1_quantized")][0]
    assert w.data_type == TensorProto.INT8 and np.abs(numpy_helper.to_array(w)).max() <= 64  # 7-bit on AVX2


def test_per_tensor_weights_when_asked(tmp_path):
    rng = np.random.default_rng(5)
    fp32 = _classifier(tmp_path / "m.onnx", rng)
    x = rng.normal(0, 1, (32, 3, 8, 8)).astype(np.float32)
    ref = logits(fp32, x)
    r = quantize_model(fp32, tmp_path / "int8.onnx", x, x, ref.argmax(1), fp32_logits=ref,
                       opts=QuantOptions(per_channel=False, min_agreement=0.0, report_sensitivity=False))
    assert r["per_channel"] is False and "per tensor" in r["weight_types"]
    scales = [numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "int8.onnx")).graph.initializer
              if "w1" in i.name and i.name.endswith("scale")]
    assert scales and all(s.size == 1 for s in scales)


def _train_a_little(net, x, steps=5):
    """A few Adam steps on the square of the outputs: the weights (and so the integers) move."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = net(torch.from_numpy(x)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _mbconv(path, rng):
    """An inverted-residual block as Lite0 has them: Conv -> Clip(0, 6) -> depthwise Conv -> Clip -> 1x1 Conv,
    Add with the block's input (residual), then pooling and a Gemm head."""
    c = 8
    inits = {"w1": rng.normal(0, 0.4, (c, 4, 3, 3)).astype(np.float32), "b1": rng.normal(0, 0.1, c).astype(np.float32),
             "wd": rng.normal(0, 0.5, (c, 1, 3, 3)).astype(np.float32), "bd": rng.normal(0, 0.1, c).astype(np.float32),
             "wp": rng.normal(0, 0.3, (c, c, 1, 1)).astype(np.float32), "bp": rng.normal(0, 0.1, c).astype(np.float32),
             "w2": rng.normal(0, 0.3, (3, c)).astype(np.float32), "lo": np.array(0, np.float32),
             "hi": np.array(6, np.float32)}
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"], name="relu6_1"),
             helper.make_node("Conv", ["a1", "wd", "bd"], ["d"], name="dw", pads=[1, 1, 1, 1], group=c),
             helper.make_node("Clip", ["d", "lo", "hi"], ["a2"], name="relu6_2"),
             helper.make_node("Conv", ["a2", "wp", "bp"], ["p"], name="project"),
             helper.make_node("Add", ["p", "a1"], ["r"], name="residual"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w2"], ["logits"], name="head", transB=1)]
    return _graph(nodes, inits, 4, 8, [None, 3], path)


def _ort_integers(model, x):
    """onnxruntime's own integer activations: every QuantizeLinear output of the graph made a graph output
    (the session's optimizations on: QDQ pairs run as its fused integer kernels)."""
    import onnxruntime as ort

    m = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    names = [n.output[0] for n in m.graph.node if n.op_type == "QuantizeLinear"]
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.UINT8, None) for n in names)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(names, {"input": x})
    return dict(zip(names, outs))


def _torch_integers(net, x, monkeypatch):
    """QDQModule's integer activations: each QuantizeLinear's fake-quant output as its uint8 grid steps."""
    import torch

    import edgetl.quantization.qat as qat

    seen, orig = {}, qat._OPS["QuantizeLinear"]

    def record(m, n, v, scale, zp=None):
        out = orig(m, n, v, scale, zp)
        s, z, lo, hi = qat._qparams(m, n, scale, zp)
        seen[n.output[0]] = torch.round(out / s + z).clamp(lo, hi).to(torch.int32).numpy()
        return out

    monkeypatch.setitem(qat._OPS, "QuantizeLinear", record)
    with torch.no_grad():
        net(torch.from_numpy(x))
    monkeypatch.setitem(qat._OPS, "QuantizeLinear", orig)
    return seen


@pytest.mark.parametrize("preset", ["x86-avx2", "x86-vnni"])
def test_qat_module_computes_onnxruntimes_integers_layer_by_layer(tmp_path, monkeypatch, preset):
    """On a block with a depthwise convolution, Clip (ReLU6) and a residual Add, every uint8 activation of
    QAT's torch forward is onnxruntime's integer kernels' within 1 LSB -- before training and after (on the
    exported graph) -- so what QAT trains is what the device runs."""
    from edgetl.quantization.qat import QDQModule

    rng = np.random.default_rng(7)
    fp32 = _mbconv(tmp_path / "m.onnx", rng)
    x = rng.normal(0, 1, (16, 4, 8, 8)).astype(np.float32)
    recipe = Recipe("t", reduce_range=PRESETS[preset].reduce_range, depthwise_8bit=PRESETS[preset].depthwise_8bit)
    quantize(fp32, tmp_path / "q.onnx", x, recipe, PRESETS[preset], work=tmp_path)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"Clip", "Add"} & ops or "QuantizeLinear" in ops
    net = QDQModule(onnx.load(str(tmp_path / "q.onnx")))

    def compare(model):
        ort, mine = _ort_integers(model, x), _torch_integers(net, x, monkeypatch)
        assert len(ort) >= 5 and set(ort) <= set(mine)  # conv1, dw, project, the residual sum, the pooled...
        same = total = 0
        for name, q in ort.items():
            d = np.abs(q.astype(np.int32) - mine[name])
            assert d.max() <= 1, (name, int(d.max()))
            same, total = same + int(np.sum(d == 0)), total + d.size
        assert same / total >= 0.95, same / total  # 1 LSB apart at rounding ties only, not a drift
        return ort

    compare(tmp_path / "q.onnx")
    _train_a_little(net, x)
    compare(net.to_onnx())
