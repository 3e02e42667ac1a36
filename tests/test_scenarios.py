"""Bench as the robot runs it: end-to-end rows, the camera rig, sustained runs, and the fp16 variant.

Behaviour on a tiny random-weight model (speed lives in benchmarks/); the scheduler itself is checked
with callables of known cost.
"""
import dataclasses
import io
import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from conftest import run_cli
from edgetl.benchmark import bench
from edgetl.config import BenchConfig
from edgetl.errors import DataError
from edgetl.exporter.fp16 import FP16_TOLERANCE
from edgetl.benchmark.remote import Remote, _remote_argv
from edgetl.runtime import STAGES, Predictor, float16_unsupported, verify_bundle
from edgetl._progress import SILENT
from edgetl.benchmark.rig import camera_rig
from edgetl.benchmark.serving import SERVING, streams_max
from edgetl.benchmark.sustained import sensors, sustained
from edgetl.targets import get_target

SCHEMA = json.loads((Path(__file__).parents[1] / "edgetl" / "schemas" / "bench.schema.json").read_text())


@pytest.fixture(scope="module")
def bundle16(int8_bundle):
    """The shared fp32 + int8 + fp16 bundle of a tiny resnet18 (conftest), its data and its run folder."""
    b, data = int8_bundle
    return b, data, b.path.parent


def _target(tmp_path, **over) -> str:
    t = {**dataclasses.asdict(get_target("host")), "name": "rig", **over}
    (tmp_path / "rig.json").write_text(json.dumps(t))
    return str(tmp_path / "rig.json")


def _jpeg(size=(320, 240)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


# --- fp16 -----------------------------------------------------------------------------------------

def test_fp16_export_has_float16_compute_float32_io_and_torch_float16_parity(bundle16):
    import torch

    b, _, run = bundle16
    m = onnx.load(str(b.path / "model.fp16.onnx"))
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert m.graph.input[0].type.tensor_type.elem_type == f32 and m.graph.output[0].type.tensor_type.elem_type == f32
    floats = [t for t in m.graph.initializer if t.data_type in (f16, f32)]
    assert floats and all(t.data_type == f16 for t in floats)  # every weight is float16
    assert (b.path / "model.fp16.onnx").stat().st_size < 0.6 * (b.path / "model.onnx").stat().st_size
    manifest = json.loads((b.path / "bundle.json").read_text())
    assert manifest["variants"]["fp16"] == "model.fp16.onnx" and "model.fp16.onnx" in manifest["files"]
    assert manifest["format_version"] == 2  # a reader of format 1 says "upgrade edgetl" instead of failing on fp16
    p16 = b.parity["fp16"]
    assert p16["reference"] == "torch float16 forward" and p16["rel_diff"] <= FP16_TOLERANCE
    # the check is real: the float16 ONNX against torch's own float16 forward of the checkpoint, here
    from edgetl.zoo.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(run / "best.pt")).half()
    with np.load(b.path / "parity.npz") as z:
        x = z["inputs"]
    with torch.no_grad():
        ref16 = model(torch.from_numpy(x).half()).float().numpy()
    p = Predictor(b.path, variant="fp16")
    assert p.labels == ("a", "b")  # metadata carried over to the float16 graph
    got = p.run(x)
    assert np.max(np.abs(got - ref16)) <= FP16_TOLERANCE * max(1.0, float(np.max(np.abs(ref16))))
    rep = verify_bundle(b.path)
    assert rep["ok"] and set(rep["variants"]) == {"fp32", "int8", "fp16"}


def test_fp16_runs_only_where_a_provider_computes_in_float16(monkeypatch):
    import edgetl.runtime.cpu as rt

    assert float16_unsupported(["CUDAExecutionProvider", "CPUExecutionProvider"]) is None
    monkeypatch.setattr(rt.platform, "machine", lambda: "x86_64")
    assert "float16" in float16_unsupported(["CPUExecutionProvider"], {"avx2", "fma"})
    monkeypatch.setattr(rt.platform, "machine", lambda: "aarch64")
    assert float16_unsupported(["CPUExecutionProvider"], {"fp", "asimd", "asimdhp", "asimddp"}) is None
    assert float16_unsupported(["CPUExecutionProvider"], {"fp", "asimd"})  # a Cortex-A72 (Pi 4): no FP16 arithmetic


# --- end to end -----------------------------------------------------------------------------------

def test_predict_staged_is_predict_and_its_stages_cover_the_call(bundle16, tmp_path):
    b, data, _ = bundle16
    p = Predictor(b.path, variant="fp32")
    raw = _jpeg()
    (tmp_path / "f.jpg").write_bytes(raw)
    pred, st = p.predict_staged(raw)
    assert list(st) == list(STAGES) and st["decode"] > 0 and st["resize"] > 0 and st["run"] > 0
    assert pred == p.predict(raw) == p.predict(tmp_path / "f.jpg")  # bytes and the file: one code path
    big = _jpeg((1280, 960))  # 16x the pixels: decode and resize grow (best of 3 calls each)
    best = lambda img, s: min(p.predict_staged(img)[1][s] for _ in range(3))  # noqa: E731
    assert best(big, "decode") > best(raw, "decode") and best(big, "resize") > best(raw, "resize")


def test_every_variant_gets_an_end_to_end_row_whose_stages_add_up(bundle16, tmp_path):
    b, data, _ = bundle16
    r = bench(b.path, BenchConfig(data=data, min_runs=20, min_time=0.0, rss=False, torch_reference=False,
                                  out=tmp_path / "e"))
    doc = json.loads((r.path / "bench.json").read_text())
    for v in ("fp32", "int8"):
        e = doc["variants"][v]["end_to_end"]
        whole = e["latency"]
        # decode + resize + crop + normalize come on top of the model's run, in the same calls (the model row
        # is timed at another moment: on a loaded machine the two rows are not comparable call for call)
        assert whole["p50_ms"] >= e["stages_p50_ms"]["run"] and whole["mean_ms"] > e["stages_mean_ms"]["run"]
        assert e["latency"]["runs"] >= 20 and set(e["stages_mean_ms"]) == set(STAGES)
        assert abs(e["unaccounted_ms"]) <= max(0.5, 0.1 * whole["mean_ms"])  # the stages add up, within timer noise
        assert abs(sum(e["shares"].values()) - 1) < 0.1 and 0 < e["model_share"] < 1
        # the model alone, timed in the same rounds: the ratio's denominator
        assert e["model_same_rounds"]["runs"] >= 20 and e["vs_model"] == e["latency"]["p50_ms"] / e["model_same_rounds"]["p50_ms"]
    assert str(data) in doc["images"]  # the real photos, as stored
    text = (r.path / "report.md").read_text()
    assert "## End to end" in text and "same interleaved rounds: fp32 " in text and (r.path / "end_to_end.png").is_file()
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, SCHEMA)


# --- camera rig -----------------------------------------------------------------------------------

def test_rig_scheduler_drops_frames_a_busy_stream_cannot_take():
    frames = [np.zeros((4, 4, 3), np.uint8)]
    busy = lambda f: time.sleep(0.045)  # noqa: E731 -- 45 ms of work per frame, a frame every 20 ms
    r = camera_rig([busy, busy], frames, fps=50, deadline_ms=30, seconds=0.6, warmup=0)
    assert r["streams_n"] == 2 and not r["pass"]
    for s in r["streams"]:
        assert s["captured"] == 30 and s["answered"] + s["dropped"] == 30
        assert s["dropped"] >= 12 and s["answered"] <= 15 and s["fps"] <= 25
        assert s["p50_ms"] >= 45 and s["late"] == s["answered"]  # none answered within 30 ms
    easy = camera_rig([lambda f: None] * 3, frames, fps=5, deadline_ms=500, seconds=0.6, warmup=0)
    assert easy["pass"] and all(s["dropped"] == 0 and s["late"] == 0 and s["answered"] == 3 for s in easy["streams"])


def test_camera_rig_from_the_bench_reports_each_stream_and_passes_an_easy_deadline(bundle16, tmp_path):
    b, data, _ = bundle16
    t = _target(tmp_path, streams=3, fps=8, deadline_ms=2000)
    r = bench(b.path, BenchConfig(target=t, data=data, min_runs=3, min_time=0.0, rss=False, rig_seconds=0.5,
                                  repeats=1, end_to_end=False, torch_reference=False, out=tmp_path / "r"))
    assert r.scenario == "camera-rig"  # the default for a target with several streams
    for v in ("fp32", "int8"):
        rig = r.variants[v]["rig"]
        assert rig["serving"] in SERVING and set(rig["probes"]) <= set(SERVING) and len(rig["probes"]) >= 3
        assert rig["mode"] == rig["probes"][rig["serving"]]["mode"] and len(rig["repeats"]) == 1
        assert len(rig["streams"]) == 3 and all(s["captured"] == 4 for s in rig["streams"])
        # a stall of the machine longer than a frame (125 ms) may drop one; the verdict follows the counts
        assert all(s["p99_ms"] < 2000 and s["answered"] >= 3 and s["late"] == 0 for s in rig["streams"])
        assert rig["pass"] == all(s["missed"] == 0 for s in rig["streams"])
        assert r.variants[v]["status"] == ("PASS" if rig["pass"] else "FAIL")
        assert all(p["captured"] == 2 * 3 * 2 for p in rig["probes"].values())  # two 0.25 s probes of each mode
    text = (r.path / "report.md").read_text()
    assert "## Camera rig" in text and "shared" in text and (r.path / "rig.png").is_file()
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads((r.path / "bench.json").read_text()), SCHEMA)


def test_a_rig_deadline_that_cannot_be_met_fails_with_the_misses_counted(bundle16, tmp_path):
    b, _, _ = bundle16
    t = _target(tmp_path, streams=3, fps=30, deadline_ms=0.001)
    r = bench(b.path, BenchConfig(target=t, min_runs=3, min_time=0.0, rss=False, rig_seconds=0.5, end_to_end=False,
                                  repeats=2, torch_reference=False, out=tmp_path / "f"))
    for v in ("fp32", "int8"):
        rig = r.variants[v]["rig"]
        assert r.variants[v]["status"] == "FAIL" and not rig["pass"]
        assert rig["missed"] == rig["captured"] == 3 * 15
        assert all(s["late"] == s["answered"] > 0 and not s["pass"] for s in rig["streams"])
        assert [x["pass"] for x in rig["repeats"]] == [False, False] and rig["spread"]["missed"] == [45, 45]
    assert "FAIL" in r.verdict


# --- sustained ------------------------------------------------------------------------------------

def test_sensors_read_cpufreq_and_thermal_zones_and_say_none_when_absent(tmp_path):
    for i, khz in enumerate((1_800_000, 1_400_000)):
        f = tmp_path / f"sys/devices/system/cpu/cpu{i}/cpufreq/scaling_cur_freq"
        f.parent.mkdir(parents=True)
        f.write_text(f"{khz}\n")
    for i, mc in enumerate((48_000, 61_500)):
        z = tmp_path / f"sys/class/thermal/thermal_zone{i}/temp"
        z.parent.mkdir(parents=True)
        z.write_text(f"{mc}\n")
    s = sensors(tmp_path)
    assert s == {"cpu_mhz": 1600.0, "cpu_mhz_source": "cpufreq", "temp_c": 61.5, "temp_source": "thermal"}
    empty = sensors(tmp_path / "nothing")
    assert empty["cpu_mhz"] is None and empty["temp_c"] is None and empty["temp_source"] is None


def test_a_run_that_slows_down_is_flagged_as_throttling_and_the_ranking_change_named():
    t0 = time.perf_counter()
    slowing = lambda: time.sleep(0.002 if time.perf_counter() - t0 < 0.6 else 0.006)  # noqa: E731
    steady = lambda: time.sleep(0.004)  # noqa: E731
    clock = iter([2000, 2000, 1990, 1200, 1100, 1100, 1100])
    fake = lambda: {"cpu_mhz": next(clock), "cpu_mhz_source": "cpufreq", "temp_c": 70.0, "temp_source": "thermal"}  # noqa: E731
    run = sustained({"slowing": slowing, "steady": steady}, 1.5, interval_s=0.5, read_sensors=fake)
    assert len(run["intervals"]) == 3 and all(set(iv["p50_ms"]) == {"slowing", "steady"} for iv in run["intervals"])
    assert run["drift_pct"]["slowing"] > 100 and abs(run["drift_pct"]["steady"]) < 50
    assert run["ranking_first"] == ["slowing", "steady"] and run["ranking_last"] == ["steady", "slowing"]
    notes = " | ".join(run["notes"])
    assert "throttling suspected: slowing" in notes and "CPU clock 2000 -> 1200 MHz" in notes  # first to last interval
    assert "ranking changed" in notes and not any(n.startswith("throttling suspected: steady") for n in run["notes"])


def test_bench_duration_reports_intervals_drift_and_a_plot_and_says_why_fp16_is_not_timed(bundle16, tmp_path):
    b, _, _ = bundle16
    r = bench(b.path, BenchConfig(min_runs=3, min_time=0.0, rss=False, end_to_end=False, torch_reference=False,
                                  duration=2.0, out=tmp_path / "d"))
    run = r.data["sustained"]
    assert len(run["intervals"]) == 2 and set(run["drift_pct"]) == set(r.variants)
    assert all(iv["runs"]["fp32"] > 0 and iv["p50_ms"]["int8"] > 0 for iv in run["intervals"])
    text = (r.path / "report.md").read_text()
    assert "## Sustained run" in text and (r.path / "sustained.png").is_file()
    why = float16_unsupported(r.data["providers_used"])
    if why:  # x86 CPU (this machine): fp16 is named with the reason, fp32 and int8 are timed
        assert r.data["skipped"] == {"fp16": why} and "fp16" not in r.variants and "fp16 not benched" in text
        with pytest.raises(DataError, match="float16"):  # the lone fp16 model: one clear line, nothing to time
            bench(b.path / "model.fp16.onnx", BenchConfig(min_runs=3, min_time=0.0, rss=False, out=tmp_path / "x"))
    else:
        assert r.variants["fp16"]["status"] in ("PASS", "FAIL")
    assert {"fp32", "int8"} <= set(r.variants)


def test_the_cli_runs_rig_sustained_and_e2e_and_forwards_them_to_a_device(bundle16, tmp_path):
    b, _, _ = bundle16
    # a lone .onnx (no torch reference to load): the command line as a user types it
    p = run_cli("bench", b.path / "model.int8.onnx", "--target", "robot-4cam", "--streams", "2", "--rig-seconds",
                "0.25", "--repeats", "2", "--frame-size", "320x240", "--frames", "mjpeg", "--trigger", "staggered",
                "--duration", "1", "--min-runs", "3", "--min-time", "0", "--no-rss", "--out", tmp_path / "c")
    assert p.returncode == 0, p.stderr
    assert "camera rig int8: 2 stream(s) at 30 FPS" in " ".join(p.stdout.split())
    assert "sustained 1 s: drift" in p.stdout and "end-to-end int8: the model is" in p.stdout
    doc = json.loads((tmp_path / "c" / "bench.json").read_text())
    assert doc["scenario"] == "camera-rig" and doc["target"]["streams"] == 2
    rig = doc["variants"]["int8"]["rig"]
    assert rig["trigger"] == "staggered" and len(rig["repeats"]) == 2 and rig["streams_n"] == 2
    assert "camera frames of 320x240 (JPEG bytes" in doc["images"] and "320x240" in p.stdout
    argv = _remote_argv(Remote("dev"), "/r", BenchConfig(streams=3, duration=60, rig_seconds=5, end_to_end=False))
    assert argv[argv.index("--streams") + 1] == "3" and float(argv[argv.index("--duration") + 1]) == 60
    assert "--no-e2e" in argv and float(argv[argv.index("--rig-seconds") + 1]) == 5
    assert "--rig-seconds" not in _remote_argv(Remote("dev"), "/r", BenchConfig())  # (older device edgetls)
    argv = _remote_argv(Remote("dev"), "/r", BenchConfig(streams_max=True, frame_size="1280x720", frames="mjpeg",
                                                          trigger="staggered", repeats=5, fast_decode=True))
    for flag, value in (("--streams", "max"), ("--frame-size", "1280x720"), ("--frames", "mjpeg"),
                        ("--trigger", "staggered"), ("--repeats", "5")):
        assert argv[argv.index(flag) + 1] == value
    assert "--fast-decode" in argv


def _costly(ms: float, per_item_ms: float = 0.0, lock=None):
    """A worker callable of known cost (sleep: the same on a loaded machine); ``lock``: one core's worth."""
    import contextlib

    def fn(x):
        n = len(x) if isinstance(x, list) else 1
        with lock or contextlib.nullcontext():
            time.sleep((ms + per_item_ms * n) / 1e3)
    return fn


def test_rig_workers_of_known_cost_exactly_one_serving_way_passes():
    """3 cameras at 10 FPS, 100 ms deadline, 40 ms a frame: a worker per camera keeps up; one worker for
    all three needs 120 ms a period and falls behind; a batch of three costs 30 + 3 x 30 ms, too late.
    (Sleeps, with margins of 20 ms and more: the verdicts hold on a loaded machine.)"""
    frames = [np.zeros((4, 4, 3), np.uint8)]
    kw = dict(fps=10, deadline_ms=100, seconds=1.5, warmup=0)
    per_stream = camera_rig([_costly(40)] * 3, frames, **kw)
    pool1 = camera_rig([_costly(40)], frames, streams=3, mode="pool", **kw)
    batch = camera_rig([_costly(30, 30)], frames, streams=3, mode="batch", **kw)
    assert [per_stream["pass"], pool1["pass"], batch["pass"]] == [True, False, False]
    assert pool1["missed"] > 5 and all(s["late"] + s["dropped"] > 0 for s in pool1["streams"])  # (round robin)
    assert batch["mode"] == "batch" and all(s["late"] + s["dropped"] > 5 for s in batch["streams"])
    # staggered cameras spread the work over the period: one worker at 25 ms a frame never queues
    stag = camera_rig([_costly(25)], frames, streams=3, mode="pool", trigger="staggered", **kw)
    assert stag["pass"] and stag["trigger"] == "staggered" and stag["worst_p99_ms"] < 60


def test_streams_max_finds_the_most_streams_a_serialised_worker_sustains():
    """Every call holds one lock for 40 ms a frame (one core's worth of work) at 10 FPS, 100 ms deadline:
    2 streams fit a period, 3 do not; the search says 2, having seen 2 pass and 3 fail."""
    import threading

    lock = threading.Lock()

    class Fake:
        predict = staticmethod(_costly(0, 40, lock=lock))  # a batch of n: 40 n ms, as n frames in a row

    target = dataclasses.replace(get_target("robot-4cam"), fps=10, deadline_ms=100)
    r = streams_max(lambda v, n, spinning=None: Fake(), "int8", [np.zeros((4, 4, 3), np.uint8)], target, 2,
                    BenchConfig(rig_seconds=1.0, repeats=1), progress=SILENT)
    assert r["streams_max"] == 2, r["tried"]
    assert r["tried"]["2"]["pass"] and not r["tried"]["3"]["pass"] and set(r["tried"]) == {"1", "2", "3", "4"}


def test_each_serving_way_gives_opencv_its_sessions_thread_count():
    """A worker per core (pool) or per camera resizes with as many OpenCV threads as its session has; the ways
    with one session for every core keep OpenCV's default."""
    import cv2

    from edgetl.benchmark.serving import rig_for_variant

    seen: dict[int, set] = {}

    class Fake:
        def __init__(self, n):
            self.n = n

        def predict(self, x):
            seen.setdefault(self.n, set()).add(cv2.getNumThreads())

    caller = cv2.getNumThreads()
    cv2.setNumThreads(3)  # the process's setting, neither 1 nor 2
    try:
        target = dataclasses.replace(get_target("robot-4cam"), fps=20, deadline_ms=100)
        rig_for_variant(lambda v, n, spinning=None: Fake(n), "int8", [np.zeros((4, 4, 3), np.uint8)], target, 4,
                        BenchConfig(rig_seconds=0.3, repeats=1), progress=SILENT, streams=2)
        assert seen[1] == {1} and seen[2] == {2} and seen[4] == {3}  # pool: 1; per-stream: 4 // 2; shared, batch
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(caller)


@pytest.mark.parametrize("args,needle", [
    (["--frame-size", "0x0"], "--frame-size 0x0"), (["--frame-size", "abc"], "WIDTHxHEIGHT"),
    (["--streams", "max", "--scenario", "offline"], "--streams max searches the camera rig"),
    (["--streams", "many"], "--streams many"), (["--repeats", "0"], "--repeats 0"),
])
def test_bad_rig_options_are_one_line(bundle16, tmp_path, args, needle):
    from conftest import assert_one_line_error

    b, _, _ = bundle16
    assert_one_line_error(run_cli("bench", b.path, *args, "--out", tmp_path / "x"), needle)


def test_noise_larger_than_the_drift_is_called_noise():
    from edgetl.benchmark.sustained import sustained_notes

    ivs = [{"t_s": i, "p50_ms": {"fp32": p}, "runs": {"fp32": 9}, "cpu_mhz": None, "temp_c": None}
           for i, p in enumerate((10.0, 7.5, 10.5, 8.0, 9.5))]
    run = {"intervals": ivs, "drift_pct": {"fp32": -5.0}, "ranking_first": ["fp32"], "ranking_last": ["fp32"],
           "temp_source": None, "cpu_mhz_source": None}
    notes = sustained_notes(run)
    assert any(n.startswith("fp32: the intervals' p50 spans 7.50-10.50 ms") and "noise, not a trend" in n for n in notes)
    assert not any("throttling" in n for n in notes)
    assert "no temperature sensor" in " ".join(notes) and "no CPU clock" in " ".join(notes)
