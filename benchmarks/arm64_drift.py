"""Do the same bundles give the same answers on x86 and on (emulated) aarch64? int8 and fp16 drift.

    python benchmarks/arm64_drift.py [--datasets NAME|DIR ...] [--images 48] [--cpu cortex-a76]
                                     [--work benchmarks/out/arm64_drift] [--reuse] [--json PATH]

For every dataset (default: ../shared/datasets/{hymenoptera,trashnet,vehicles}):
  1. fine-tune efficientnet_lite0 with the default linear probe, export fp32 + int8 (the host-tuned
     preset, `auto`) + fp16 to RUN/bundle, and a second int8 with `--preset arm64` to WORK/DS/bundle_arm64
     (accuracy gate off: max_drop 100, min_agreement 0: this measures, it does not select);
  2. take --images val images (class-stratified, seed 0), prepare them on the host with the bundle's own
     preprocessing (Predictor.prepare: float32 NCHW) and save inputs + labels to WORK/DS/inputs.npz;
  3. run every model file (fp32, int8, fp16, int8-arm64) with onnxruntime's CPU provider, --threads
     intra-op threads, on the host (x86_64) and inside the emulated aarch64 root (arm64_device.sh exec,
     QEMU_CPU=--cpu): a standalone script copied into the root loads the npz and saves the logits;
  4. compare. Per variant: top-1 on each side, top-1 agreement with fp32 *of the same platform*, images
     whose top-1 flips between x86 and aarch64, max / mean |logit diff| x86 vs aarch64.

Emulation (qemu-user) gives ARM's arithmetic (NEON / dot-product int8 kernels, ARMv8.2 float16 kernels
when the CPU advertises asimdhp), never ARM's timing: the seconds recorded for the aarch64 side are the
emulator's. The HWCAP bits the emulated CPU advertised (read from /proc/self/auxv inside) and both sides'
onnxruntime versions are recorded in the JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED, save  # noqa: E402

from edgetl.devices.emulated import SCRIPT as DEVICE_SH, default_root  # noqa: E402  (edgetl emulator's device)

DEVICE_ROOT = default_root()
INSIDE = "/tmp/edgetl-drift"  # the work folder, as a path inside the device root
VARIANTS = ("fp32", "int8", "fp16", "int8_arm64")  # int8: the host-tuned preset (auto); int8_arm64: --preset arm64
HOST_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
              "amx_int8")

# Runs inside the aarch64 root with /opt/venv/bin/python3 (onnxruntime, numpy; no edgetl there).
DEVICE_SCRIPT = r'''
import json, os, platform, struct, sys, time
import numpy as np
import onnxruntime as ort

ARM64_HWCAP = ("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp",
               "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512",
               "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg")
ARM64_HWCAP2 = ("dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint",
                "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16")

def hwcaps():
    data = open("/proc/self/auxv", "rb").read()
    n = len(data) // 16
    v = struct.unpack("%dQ" % (2 * n), data[:16 * n])
    aux = {v[i]: v[i + 1] for i in range(0, len(v), 2)}
    h, h2 = aux.get(16, 0), aux.get(26, 0)
    names = [nm for b, nm in enumerate(ARM64_HWCAP) if h >> b & 1] + [nm for b, nm in enumerate(ARM64_HWCAP2) if h2 >> b & 1]
    return {"AT_HWCAP": hex(h), "AT_HWCAP2": hex(h2), "asimdhp": bool(h >> 10 & 1), "asimddp": bool(h >> 20 & 1),
            "i8mm": bool(h2 >> 13 & 1), "flags": names}

def main():
    npz, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    models = dict(a.split("=", 1) for a in sys.argv[4:])
    z = np.load(npz)
    x = z["x"]
    meta = {"machine": platform.machine(), "onnxruntime": ort.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "qemu_cpu": os.environ.get("QEMU_CPU"), "hwcap": hwcaps(),
            "threads": threads, "models": {}}
    res = {}
    for name, path in models.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        m = {"file": path}
        try:
            t = time.time()
            s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            m["load_s"] = round(time.time() - t, 2)
            t = time.time()
            xs = x[z[name + "_idx"]] if name + "_idx" in z.files else x  # a subset for the slow ones
            res[name] = np.concatenate([s.run(None, {"input": xs[i:i + 8]})[0] for i in range(0, len(xs), 8)])
            m["run_s"] = round(time.time() - t, 2)
            m["images"] = len(xs)
            m["s_per_image"] = round(m["run_s"] / len(xs), 3)
        except Exception as e:
            m["error"] = "%s: %s" % (type(e).__name__, str(e)[:500])
        meta["models"][name] = m
        print(name, json.dumps(m), flush=True)
    np.savez(out, **res)
    with open(out + ".json", "w") as f:
        json.dump(meta, f, indent=1)

main()
'''


def dataset_path(d: str) -> Path:
    p = Path(d)
    return p if p.is_dir() else SHARED / d


def build(data: Path, work: Path, reuse: bool) -> dict:
    """Fine-tune + the two exports (or reuse them); -> {variant: model path} and the export facts."""
    import edgetl
    from edgetl.runtime.bundle import read_manifest

    run_dir, host_b, arm_b = work / "run", work / "run" / "bundle", work / "bundle_arm64"
    info = {"run": str(run_dir), "bundle": str(host_b), "bundle_arm64": str(arm_b)}
    have = reuse and all((host_b / f).is_file() for f in ("model.onnx", "model.int8.onnx", "model.fp16.onnx")) \
        and (arm_b / "model.int8.onnx").is_file()
    if have:
        info["reused"] = True
    else:
        t = time.time()
        run = edgetl.finetune(edgetl.FinetuneConfig(data=data, backbone="efficientnet_lite0", out=run_dir), force=True)
        info["finetune_s"] = round(time.time() - t, 1)
        t = time.time()
        edgetl.export(run.out, edgetl.ExportConfig(int8=True, fp16=True, max_drop=100, min_agreement=0.0), force=True)
        info["export_s"] = round(time.time() - t, 1)
        t = time.time()
        edgetl.export(run.out, edgetl.ExportConfig(int8=True, preset="arm64", max_drop=100, min_agreement=0.0,
                                                   out=arm_b), force=True)
        info["export_arm64_s"] = round(time.time() - t, 1)
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        info["best_val"] = json.loads(metrics.read_text()).get("best_val_acc")  # on the whole val split
    for key, b in (("quantization", host_b), ("quantization_arm64", arm_b)):
        q = json.loads((b / "bundle.json").read_text()).get("quantization") or {}
        info[key] = {k: q.get(k) for k in ("method", "preset", "calib_method", "per_channel", "format",
                                           "activation_type", "weight_type") if q.get(k) is not None} or q
    info["labels"] = list(read_manifest(host_b).labels)
    info["models"] = {"fp32": str(host_b / "model.onnx"), "int8": str(host_b / "model.int8.onnx"),
                      "fp16": str(host_b / "model.fp16.onnx"), "int8_arm64": str(arm_b / "model.int8.onnx")}
    return info


def inputs(data: Path, bundle: Path, n: int, out: Path, subsets: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """n class-stratified val images, prepared on the host with the bundle's own preprocessing; ``subsets``
    ({variant: indices}) are saved beside them as VARIANT_idx."""
    from edgetl.data import load_imagefolder, stratified_sample
    from edgetl.runtime import Predictor

    split = load_imagefolder(data)
    picked = stratified_sample(split.val, n, seed=0)
    p = Predictor(bundle, variant="fp32", threads=1)
    if list(p.labels) != list(split.classes):
        raise SystemExit(f"{bundle}: labels {p.labels} differ from {data}'s classes {split.classes}")
    paths = [str(s.path) for s in picked]
    x = p.prepare(paths).astype(np.float32)
    y = np.array([s.label for s in picked], dtype=np.int64)
    np.savez(out, x=x, y=y, paths=np.array(paths), **{f"{k}_idx": v for k, v in subsets.items()})
    return x, y, paths


def host_logits(models: dict, x: np.ndarray, subsets: dict, threads: int) -> tuple[dict, dict]:
    import onnxruntime as ort

    from edgetl.runtime.session import session_options

    res, meta = {}, {}
    for name, path in models.items():
        m = {}
        try:
            t = time.time()
            s = ort.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
            m["load_s"] = round(time.time() - t, 2)
            t = time.time()
            xs = x[subsets[name]] if name in subsets else x
            res[name] = np.concatenate([s.run(None, {"input": xs[i:i + 8]})[0] for i in range(0, len(xs), 8)])
            m["run_s"] = round(time.time() - t, 2)
            m["images"] = len(xs)
            m["s_per_image"] = round(m["run_s"] / len(xs), 4)
        except Exception as e:  # noqa: BLE001 - a model that fails on one side is a result
            m["error"] = f"{type(e).__name__}: {str(e)[:500]}"
        meta[name] = m
    return res, meta


def device_logits(models: dict, npz: Path, name: str, cpu: str, threads: int) -> tuple[dict, dict, float]:
    """Copy inputs + models into the root, run DEVICE_SCRIPT there, read the logits back."""
    inside = DEVICE_ROOT / INSIDE.lstrip("/")
    d = inside / name
    d.mkdir(parents=True, exist_ok=True)
    (inside / "device_run.py").write_text(DEVICE_SCRIPT)
    shutil.copy2(npz, d / "inputs.npz")
    args = []
    for k, path in models.items():
        shutil.copy2(path, d / f"{k}.onnx")
        args.append(f"{k}={INSIDE}/{name}/{k}.onnx")
    out = d / "logits.npz"
    for f in (out, Path(str(out) + ".json")):
        f.unlink(missing_ok=True)
    cmd = ["bash", str(DEVICE_SH), "--root", str(DEVICE_ROOT), "--cpu", cpu, "exec", "/opt/venv/bin/python3", f"{INSIDE}/device_run.py",
           f"{INSIDE}/{name}/inputs.npz", f"{INSIDE}/{name}/logits.npz", str(threads), *args]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode != 0 or not out.is_file():
        raise RuntimeError(f"device run failed (rc {p.returncode}): {p.stdout[-1500:]} {p.stderr[-1500:]}")
    meta = json.loads(Path(str(out) + ".json").read_text())
    with np.load(out) as z:
        res = {k: z[k] for k in z.files}
    return res, meta, wall


def compare(x86: dict, arm: dict, y: np.ndarray, paths: list[str], subsets: dict) -> dict:
    """Per variant; a variant run on a subset (``subsets``) is compared with fp32 on the same images."""
    rows = {}
    for v in VARIANTS:
        idx = np.asarray(subsets.get(v, np.arange(len(y))))
        r = {"images": int(len(idx))}
        for side, res in (("x86", x86), ("arm", arm)):
            if v in res:
                r[f"top1_{side}"] = float(np.mean(res[v].argmax(1) == y[idx]))
                if "fp32" in res and v != "fp32":
                    ref = res["fp32"][idx]
                    r[f"agree_fp32_{side}"] = float(np.mean(res[v].argmax(1) == ref.argmax(1)))
                    r[f"max_diff_fp32_{side}"] = float(np.max(np.abs(res[v] - ref)))
        if v in x86 and v in arm:
            a, b = x86[v], arm[v]
            flip = np.nonzero(a.argmax(1) != b.argmax(1))[0]
            r["flips"] = int(len(flip))
            r["flipped"] = [{"image": paths[idx[i]], "label": int(y[idx[i]]), "x86": int(a[i].argmax()),
                             "arm": int(b[i].argmax())} for i in flip]
            r["max_diff_x86_arm"] = float(np.max(np.abs(a - b)))
            r["mean_diff_x86_arm"] = float(np.mean(np.abs(a - b)))
        rows[v] = r
    return rows


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def num(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def markdown(doc: dict) -> str:
    lines = ["| dataset | variant | top-1 x86 | top-1 aarch64 | agree fp32 x86 | agree fp32 aarch64 | flips x86/aarch64 "
             "| max \\|dlogit\\| x86 vs aarch64 | max \\|dlogit\\| vs fp32 (aarch64) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in doc["rows"]:
        n = row["images"]
        for v in VARIANTS:
            r = row["variants"].get(v, {})
            lines.append(f"| {row['dataset']} | {v} | {pct(r.get('top1_x86'))} | {pct(r.get('top1_arm'))} | "
                         f"{pct(r.get('agree_fp32_x86'))} | {pct(r.get('agree_fp32_arm'))} | "
                         f"{r.get('flips', '-')}/{r.get('images', n)} | {num(r.get('max_diff_x86_arm'))} | "
                         f"{num(r.get('max_diff_fp32_arm'))} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    from edgetl.data import load_imagefolder
    from edgetl.runtime.cpu import cpu_info, host_isa

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=["hymenoptera", "trashnet", "vehicles"],
                    help="names under ../shared/datasets, or folders")
    ap.add_argument("--images", type=int, default=48, help="val images per dataset (class-stratified, seed 0)")
    ap.add_argument("--fp16-images", type=int, default=None,
                    help="run fp16 on only this many of them, evenly spaced (qemu emulates float16 arithmetic "
                         "slowly: ~3x fp32's time); default: all")
    ap.add_argument("--cpu", default="cortex-a76", help="qemu CPU model for the emulated aarch64 side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / "out" / "arm64_drift",
                    help="runs, bundles, inputs, logits")
    ap.add_argument("--reuse", action="store_true", help="reuse bundles already in --work (skip fine-tune + export)")
    ap.add_argument("--json", type=Path, default=RESULTS / "arm64_drift.json")
    a = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    t_all = time.time()
    info = cpu_info()
    doc = {"benchmark": "arm64_drift", "date": time.strftime("%Y-%m-%d"),
           "command": "python benchmarks/arm64_drift.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "host": host_isa() | {"model": info["model"], "cores": info["cores"],
                                 "flags": sorted(f for f in HOST_FLAGS if f in info["flags"])},
           "machine": platform.machine(), "threads": a.threads, "images_per_dataset": a.images,
           "fp16_images_per_dataset": a.fp16_images or a.images,
           "device": {"how": f"qemu-user (edgetl emulator's root, arm64_device.sh exec), QEMU_CPU={a.cpu}",
                      "root": str(DEVICE_ROOT)},
           "timing_note": "aarch64 seconds are qemu-user emulation on the x86 host, not ARM timing",
           "rows": []}
    import onnxruntime as ort

    doc["host"]["onnxruntime"] = ort.__version__
    for d in a.datasets:
        data = dataset_path(d)
        work = a.work / data.name
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        b = build(data, work, a.reuse)
        build_s = time.time() - t0
        n = min(a.images, len(load_imagefolder(data).val))
        subsets = {}
        if a.fp16_images is not None and a.fp16_images < n:
            subsets["fp16"] = np.unique(np.linspace(0, n - 1, a.fp16_images).round().astype(np.int64))
        x, y, paths = inputs(data, Path(b["bundle"]), n, work / "inputs.npz", subsets)
        t = time.time()
        x86, x86_meta = host_logits(b["models"], x, subsets, a.threads)
        host_s = time.time() - t
        np.savez(work / "logits_x86.npz", **x86)
        print(f"[{data.name}] built in {build_s:.0f} s; host inference {host_s:.1f} s; aarch64 (emulated) ...",
              flush=True)
        arm, arm_meta, wall = device_logits(b["models"], work / "inputs.npz", data.name, a.cpu, a.threads)
        np.savez(work / "logits_aarch64.npz", **arm)
        doc["device"].update({k: arm_meta[k] for k in ("machine", "onnxruntime", "numpy", "python", "qemu_cpu",
                                                       "hwcap")})
        row = {"dataset": data.name, "images": len(y), "classes": b["labels"], "build": {k: v for k, v in b.items()
                                                                                        if k not in ("labels",)},
               "variants": compare(x86, arm, y, paths, subsets), "x86_runs": x86_meta, "aarch64_runs": arm_meta["models"],
               "aarch64_wall_s": round(wall, 1), "inputs": str(work / "inputs.npz"), "seconds": round(time.time() - t0, 1)}
        doc["rows"].append(row)
        print(f"[{data.name}] aarch64 wall {wall:.0f} s (emulation) "
              + " ".join(f"{k}={m.get('s_per_image', m.get('error'))}s/img" for k, m in arm_meta["models"].items()),
              flush=True)
        save(a.json, doc)  # after every dataset: a crash keeps what was measured
    doc["seconds"] = round(time.time() - t_all, 1)
    doc["markdown"] = markdown(doc)
    save(a.json, doc)
    hw = doc["device"].get("hwcap", {})
    print(f"\nhost: {doc['host']['model']} onnxruntime {doc['host']['onnxruntime']}; aarch64: QEMU_CPU={a.cpu} "
          f"onnxruntime {doc['device'].get('onnxruntime')} HWCAP {hw.get('AT_HWCAP')} HWCAP2 {hw.get('AT_HWCAP2')} "
          f"(asimdhp {hw.get('asimdhp')}, asimddp {hw.get('asimddp')}, i8mm {hw.get('i8mm')})\n")
    print(doc["markdown"])
    for row in doc["rows"]:
        for side, runs in (("x86", row["x86_runs"]), ("aarch64", row["aarch64_runs"])):
            for k, m in runs.items():
                if "error" in m:
                    print(f"{row['dataset']}: {k} failed on {side}: {m['error']}")
    print(f"\ntotal {doc['seconds']:.0f} s (aarch64 side: emulation, not ARM timing)")
    return doc


if __name__ == "__main__":
    main()
