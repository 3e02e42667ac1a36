"""The export bundle: a folder that carries everything a device needs, and its strict reader.

    bundle/
      model.onnx         fp32 graph, self-describing (metadata_props)
      model.int8.onnx    static int8 (QDQ), when exported with --int8
      model.fp16.onnx    float16 weights and compute, float32 input/output, when exported with --fp16
      parity.npz         reference inputs + fp32 torch logits: parity checks with no dataset, no torch
      bundle.json        manifest: format version, files (sha256, size), labels, preprocessing, I/O, opset
      export.json        the export config and the parity / quantization figures

    m = read_manifest("bundle/")          # validated Manifest, or one clear ArtifactError
    verify_files("bundle/", m)            # sha256 + size of every file, before onnxruntime parses any

No torch here: the runtime, ``edgetl verify`` and ``edgetl bench`` use this module on the device.
The reader trusts nothing: wrong types, missing keys, absurd values and file names that leave the
folder (``../../x``) are refused with a line that names the key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path, PurePosixPath

from .errors import ArtifactError
from .preprocess import Preprocess

BUNDLE_FORMAT = "edgetl-bundle"
BUNDLE_VERSION = 3  # the newest this reader takes; 2: a bundle with a float16 variant; 3: a resampler other than PIL
MANIFEST = "bundle.json"
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
META_PREFIX = "edgetl."
MAX_FILE_BYTES = 8 << 30  # 8 GiB: larger claims are refused before anything is read
MAX_LABELS = 100_000


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The validated content of bundle.json."""

    format_version: int
    labels: tuple[str, ...]
    preprocess: Preprocess
    embed_preprocess: bool
    input_name: str
    output_name: str
    files: dict  # name -> {"sha256": str, "size": int}
    variants: dict  # variant -> file name
    backbone: str
    parity: dict
    quantization: dict | None
    raw: dict

    def model_file(self, variant: str) -> str:
        if variant not in self.variants:
            have = ", ".join(sorted(self.variants))
            how = f": export it with edgetl export --{variant}" if variant in ("int8", "fp16") else ""
            raise ArtifactError(f"this bundle has no {variant} model (it has: {have}){how}")
        return self.variants[variant]



def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

def _req(d: dict, key: str, typ, where: str):
    if key not in d:
        raise ArtifactError(f"{where}: missing key '{key}'; re-export the bundle with edgetl export")
    v = d[key]
    if typ is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    elif typ is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    else:
        ok = isinstance(v, typ)
    if not ok:
        raise ArtifactError(f"{where}: '{key}' must be {getattr(typ, '__name__', typ)}, got {type(v).__name__}")
    return v


def safe_name(name: str, where: str) -> str:
    """A file name inside the bundle folder: no separators, no '..', nothing absolute."""
    if (not isinstance(name, str) or not name or len(name) > 255 or name in (".", "..")
            or "/" in name or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name)
            or PurePosixPath(name).is_absolute()):
        raise ArtifactError(f"{where}: file name {name!r} is not a plain name inside the bundle folder (refused)")
    return name


def parse_manifest(d, where: str = MANIFEST) -> Manifest:
    """Validate a decoded bundle.json (any JSON value) into a Manifest."""
    if not isinstance(d, dict):
        raise ArtifactError(f"{where}: must be a JSON object")
    if d.get("format") != BUNDLE_FORMAT:
        raise ArtifactError(f"{where}: not an edgetl bundle (format {d.get('format')!r})")
    version = _req(d, "format_version", int, where)
    if version > BUNDLE_VERSION or version < 1:
        raise ArtifactError(f"{where}: bundle format version {version} is newer than this edgetl reads "
                            f"({BUNDLE_VERSION}): upgrade edgetl on this device (pip install -U edgetl)")
    labels = _req(d, "labels", list, where)
    if not 2 <= len(labels) <= MAX_LABELS or not all(isinstance(x, str) and len(x) < 1000 for x in labels):
        raise ArtifactError(f"{where}: 'labels' must be 2..{MAX_LABELS} strings; re-export the bundle")
    pp = Preprocess.from_dict(_req(d, "preprocess", dict, where))
    embed = _req(d, "embed_preprocess", bool, where)
    io_in = _req(d, "input", dict, where)
    io_out = _req(d, "output", dict, where)
    files = _req(d, "files", dict, where)
    if not files:
        raise ArtifactError(f"{where}: 'files' is empty")
    clean_files = {}
    for name, info in files.items():
        safe_name(name, where)
        if not isinstance(info, dict):
            raise ArtifactError(f"{where}: files[{name!r}] must be an object")
        sha = _req(info, "sha256", str, f"{where} files[{name!r}]")
        size = _req(info, "size", int, f"{where} files[{name!r}]")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ArtifactError(f"{where}: files[{name!r}].sha256 is not a sha256 hex digest")
        if not 0 <= size <= MAX_FILE_BYTES:
            raise ArtifactError(f"{where}: files[{name!r}].size {size} is out of range")
        clean_files[name] = {"sha256": sha, "size": size}
    variants = _req(d, "variants", dict, where)
    if "fp32" not in variants:
        raise ArtifactError(f"{where}: 'variants' has no fp32 model")
    for v, name in variants.items():
        if v not in VARIANT_FILES or not isinstance(name, str):
            raise ArtifactError(f"{where}: unknown variant {v!r}")
        if safe_name(name, where) not in clean_files:
            raise ArtifactError(f"{where}: variant {v} names {name!r}, which 'files' does not list")
    quant = d.get("quantization")
    if quant is not None and not isinstance(quant, dict):
        raise ArtifactError(f"{where}: 'quantization' must be an object or null")
    parity = d.get("parity", {})
    if not isinstance(parity, dict):
        raise ArtifactError(f"{where}: 'parity' must be an object")
    return Manifest(version, tuple(labels), pp, embed, _req(io_in, "name", str, where + " input"),
                    _req(io_out, "name", str, where + " output"), clean_files, dict(variants),
                    str(d.get("backbone", "?")), parity, quant, d)


def read_manifest(bundle_dir: str | Path) -> Manifest:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise ArtifactError(f"bundle folder not found: {bundle_dir}; create it with edgetl export RUN")
    if not path.is_file():
        raise ArtifactError(f"{bundle_dir} has no {MANIFEST}: it is not an edgetl bundle (edgetl export RUN makes one)")
    if path.stat().st_size > 64 << 20:
        raise ArtifactError(f"{path} is implausibly large ({path.stat().st_size} bytes): refused")
    try:
        d = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({type(e).__name__}): re-export the bundle") from None
    return parse_manifest(d, str(path))


def verify_file(bundle_dir: Path, m: Manifest, name: str) -> None:
    """Size, then sha256, of one listed file; raise before anything parses a tampered file."""
    info = m.files.get(name)
    if info is None:
        raise ArtifactError(f"{name} is not listed in {bundle_dir / MANIFEST}: refused")
    p = Path(bundle_dir) / name
    if not p.is_file():
        raise ArtifactError(f"{p} is missing: copy the whole bundle folder")
    size = p.stat().st_size
    if size != info["size"]:
        raise ArtifactError(f"{p} is {size} bytes but {MANIFEST} says {info['size']}: truncated or replaced; "
                            f"copy the bundle again")
    if sha256_file(p) != info["sha256"]:
        raise ArtifactError(f"{p} does not match its sha256 in {MANIFEST}: tampered or corrupted; copy the bundle again")


def verify_files(bundle_dir: str | Path, m: Manifest) -> list[str]:
    """Check every listed file; returns the names checked."""
    for name in m.files:
        verify_file(Path(bundle_dir), m, name)
    return list(m.files)


def format_version(variants, pp: Preprocess | None = None) -> int:
    """The oldest format that holds these variants and this preprocessing: a bundle whose preprocessing
    uses a resampler other than PIL is 3 (a reader of 2 would ignore the field and resize with PIL: wrong
    pixels, silently), an fp16 bundle 2 (a reader of 1 does not know fp16), others 1. An older reader then
    says "upgrade edgetl" instead of computing something else."""
    if pp is not None and pp.resampler != "pillow":
        return 3
    return 2 if "fp16" in variants else 1


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def onnx_metadata(labels, pp: Preprocess, *, backbone: str, weights_source: str | None, version: str,
                  checkpoint_sha256: str, embed_preprocess: bool, format_version: int,
                  extra: dict | None = None) -> dict[str, str]:
    """The metadata_props a lone .onnx carries (all values are strings). ``format_version`` is the bundle's
    own (``format_version(variants)``): a bundle without fp16 stays readable by a format-1 reader."""
    meta = {
        "labels": json.dumps(list(labels)),
        "preprocess": pp.to_json(),
        "embed_preprocess": json.dumps(embed_preprocess),
        "backbone": backbone,
        "weights_source": str(weights_source),
        "edgetl_version": version,
        "checkpoint_sha256": checkpoint_sha256,
        "bundle_format_version": str(int(format_version)),
    }
    meta.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (extra or {}).items()})
    return {META_PREFIX + k: v for k, v in meta.items()}


def parse_onnx_metadata(props: dict, where: str) -> tuple[tuple[str, ...], Preprocess, bool, dict]:
    """(labels, preprocess, embed_preprocess, all edgetl.* props) from a model's custom metadata."""
    meta = {k[len(META_PREFIX):]: v for k, v in props.items() if k.startswith(META_PREFIX)}
    if "labels" not in meta:
        raise ArtifactError(f"{where} has no label table (metadata 'edgetl.labels'): export it with edgetl export, "
                            f"or use its bundle folder")
    try:
        labels = json.loads(meta["labels"])
        pp = Preprocess.from_dict(json.loads(meta.get("preprocess", "{}")))
        embed = bool(json.loads(meta.get("embed_preprocess", "false")))
        fmt = int(meta.get("bundle_format_version", "1"))
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise ArtifactError(f"{where}: malformed edgetl metadata ({e}); re-export it") from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or len(labels) < 2:
        raise ArtifactError(f"{where}: metadata 'edgetl.labels' must be a list of at least 2 strings")
    if fmt > BUNDLE_VERSION:
        raise ArtifactError(f"{where} was exported for bundle format {fmt}, newer than this edgetl reads "
                            f"({BUNDLE_VERSION}): upgrade edgetl")
    return tuple(labels), pp, embed, meta
