"""The device side: onnxruntime + numpy + Pillow, no torch, preprocessing exactly as trained.

    from edgetl.runtime import Predictor
    p = Predictor("bundle/")                  # int8 if the bundle has it, else fp32
    p.predict("frame.jpg", top_k=3)           # -> Prediction(label, prob, top_k=[(label, prob), ...])
    p.predict([img1, img2])                   # paths, PIL images, HxWx3 uint8 arrays; lists are batches

A bundle folder is verified (size + sha256 of the model file against bundle.json) before
onnxruntime parses anything; a lone .onnx is read through its ``edgetl.*`` metadata_props.
One ``InferenceSession``; ``predict`` is safe to call from many threads at once.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .bundle import Manifest, parse_onnx_metadata, read_manifest, verify_file
from .errors import ArtifactError, RuntimeInputError
from .preprocess import Preprocess, load_image, require_opencv, to_rgb
from .session import load_session

__all__ = ["Predictor", "Prediction", "STAGES", "variant_of_file"]

STAGES = ("decode", "resize", "crop", "normalize", "run", "postprocess")  # Predictor.predict_staged, in order


@dataclasses.dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    prob: float
    top_k: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict:
        return {"label": self.label, "index": self.index, "prob": self.prob,
                "top_k": [{"label": lbl, "prob": p} for lbl, p in self.top_k]}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Predictor:
    """Classify images with an exported bundle or a lone edgetl .onnx.

    Args:
        path: a bundle folder, or a .onnx file exported by edgetl.
        variant: 'auto' (int8 when present), 'fp32', 'int8' or 'fp16' (bundles only).
        providers: onnxruntime execution providers in fallback order; missing ones are skipped.
        threads: intra-op threads (0: onnxruntime's default).
        spinning: onnxruntime's intra-op spin-wait (None: its default, on); off when many sessions share
            few cores (a camera rig's workers).
        fast_decode: decode JPEGs at a reduced DCT scale, at least twice the resize target (opt-in: faster,
            not the tensor training saw; RESULTS.md measures what it moves).
        verified: the bundle's manifest, its files already checked by the caller (``verify_files``): not read
            or hashed again (bench and verify build many predictors of one bundle).
    """

    def __init__(self, path: str | os.PathLike, *, variant: str = "auto", providers: Sequence[str] | None = None,
                 threads: int = 0, spinning: bool | None = None, fast_decode: bool = False,
                 verified: Manifest | None = None):
        path = Path(path)
        self.manifest: Manifest | None = None
        if path.is_dir():
            m = verified or read_manifest(path)
            if variant == "auto":
                variant = "int8" if "int8" in m.variants else "fp32"
            if variant not in ("fp32", "int8", "fp16"):
                raise RuntimeInputError(f"unknown variant '{variant}': use auto, fp32, int8 or fp16")
            model = path / m.model_file(variant)
            if verified is None:
                verify_file(path, m, model.name)  # before onnxruntime parses a byte of it
            self.manifest = m
        elif path.is_file():
            named = variant_of_file(path)
            if variant not in ("auto", "fp32", named):
                raise RuntimeInputError(f"{path} is a single {named} model: --int8/--fp32/--fp16 choose within a "
                                        f"bundle folder")
            model, variant = path, named
        else:
            raise ArtifactError(f"model not found: {path}; pass a bundle folder or a .onnx file")
        self.path, self.model_path, self.variant = path, model, variant
        self.session, self.missing_providers = load_session(model, providers, threads, spinning=spinning)
        where = str(model)
        labels, pp, embed, self.metadata = parse_onnx_metadata(
            self.session.get_modelmeta().custom_metadata_map, where)
        if self.manifest is not None and tuple(labels) != self.manifest.labels:
            raise ArtifactError(f"{where}: its labels differ from bundle.json's: re-export the bundle")
        self.labels: tuple[str, ...] = labels
        self.preprocess: Preprocess = pp
        if pp.resampler == "opencv":
            require_opencv()  # now, not as a failure of every image later
        self._decode_for = pp if fast_decode else None  # load_image's fast_decode
        self.embed = embed
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(inp.shape)  # e.g. ('batch', 3, 224, 224) or ('batch', 224, 224, 3)
        out = self.session.get_outputs()[0]
        if isinstance(out.shape[-1], int) and out.shape[-1] != len(labels):
            raise ArtifactError(f"{where}: the model has {out.shape[-1]} outputs but {len(labels)} labels: re-export it")

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    # -- inputs ----------------------------------------------------------------------------------
    def _frame(self, x: Any) -> np.ndarray:
        """One input -> a uint8 HxWx3 frame at the model's input size."""
        pp = self.preprocess
        if isinstance(x, (str, os.PathLike, bytes, bytearray, memoryview)):  # a file, or encoded bytes (JPEG, PNG)
            return pp.frame(load_image(x, fast_decode=self._decode_for))
        if isinstance(x, Image.Image):
            return pp.frame(to_rgb(x))
        if isinstance(x, np.ndarray):
            # every size goes through resize + crop, a crop x crop frame included: the same frame saved
            # as a file is resized then cropped too, and both must give the same logits
            return pp.frame(self._checked_array(x))
        raise RuntimeInputError(f"cannot predict on {type(x).__name__}: pass a path, a PIL image or a uint8 array")

    @staticmethod
    def _checked_array(x: np.ndarray) -> np.ndarray:
        if x.dtype != np.uint8:
            raise RuntimeInputError(f"image arrays must be uint8 HxWx3 RGB, got dtype {x.dtype}")
        if x.ndim == 2:
            x = np.repeat(x[:, :, None], 3, axis=2)
        if x.ndim != 3 or x.shape[2] != 3:
            raise RuntimeInputError(f"image arrays must be HxWx3 (RGB), got shape {x.shape}; "
                                    f"convert grayscale/RGBA to RGB first")
        return x

    def prepare(self, inputs: Any) -> np.ndarray:
        """Inputs -> the model's input batch (float NCHW, or uint8 NHWC with embedded preprocessing)."""
        if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
            items = list(inputs)
        elif isinstance(inputs, (list, tuple)):
            items = list(inputs)
        else:
            items = [inputs]
        if not items:
            raise RuntimeInputError("nothing to predict: the input list is empty")
        return self._input(np.stack([self._frame(x) for x in items]))

    def _input(self, frames: np.ndarray) -> np.ndarray:
        return frames if self.embed else self.preprocess.normalize(frames)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits [N, classes] for an already prepared batch (shape-checked)."""
        exp = self.input_shape[1:]
        if batch.ndim != 4 or any(isinstance(e, int) and e != g for e, g in zip(exp, batch.shape[1:])):
            raise RuntimeInputError(f"input batch has shape {tuple(batch.shape)}, the model takes "
                                    f"{('N',) + tuple(exp)}: use Predictor.prepare / predict on images")
        want = np.uint8 if self.embed else np.float32
        if batch.dtype != want:
            raise RuntimeInputError(f"input batch is {batch.dtype}, the model takes {np.dtype(want).name}")
        return self.session.run(None, {self.input_name: batch})[0]

    def predict(self, inputs: Any, top_k: int = 5):
        """Classify one input (-> Prediction) or a list/batch (-> list[Prediction]).

        Inputs: image paths, encoded image bytes (a JPEG from a camera), PIL images, uint8 HxWx3 arrays.
        """
        single = not (isinstance(inputs, (list, tuple)) or (isinstance(inputs, np.ndarray) and inputs.ndim == 4))
        out = self._top_k(self.run(self.prepare(inputs)), top_k)
        return out[0] if single else out

    def _top_k(self, logits: np.ndarray, top_k: int) -> list[Prediction]:
        probs = _softmax(logits.astype(np.float64))
        k = max(1, min(int(top_k), len(self.labels)))
        out = []
        for p in probs:
            idx = np.argsort(-p, kind="stable")[:k]
            out.append(Prediction(self.labels[idx[0]], int(idx[0]), float(p[idx[0]]),
                                  tuple((self.labels[i], float(p[i])) for i in idx)))
        return out

    def predict_staged(self, image: bytes | str | os.PathLike | np.ndarray, top_k: int = 5
                       ) -> tuple[Prediction, dict[str, float]]:
        """``predict`` on one camera input -- encoded bytes, a file, or a raw uint8 HxWx3 frame -- and the ms
        each of its steps took (``STAGES``: decode, resize, crop, normalize, run, postprocess): the same code
        predict runs. "decode" of a raw frame wraps its buffer as an image; "resize" resamples only the
        columns that survive the crop, so "crop" is what is left: the rows, and the frame as an array."""
        pp, t = self.preprocess, [time.perf_counter()]
        if isinstance(image, np.ndarray):
            img = self._checked_array(image)
            img = img if pp.resampler == "opencv" else Image.fromarray(img)  # (opencv resizes the array itself)
        else:
            img = load_image(image, fast_decode=self._decode_for)
        t.append(time.perf_counter())
        img = pp.resample(img)  # resized, only the columns that survive the crop
        t.append(time.perf_counter())
        frame = pp.center_crop(np.asarray(img, dtype=np.uint8))
        t.append(time.perf_counter())
        batch = self._input(frame[None])
        t.append(time.perf_counter())
        logits = self.run(batch)
        t.append(time.perf_counter())
        pred = self._top_k(logits, top_k)[0]
        t.append(time.perf_counter())
        return pred, {s: (t[i + 1] - t[i]) * 1e3 for i, s in enumerate(STAGES)}


def variant_of_file(path: Path) -> str:
    """fp32 / int8 / fp16 from a bundle's file name (model.int8.onnx, model.fp16.onnx)."""
    name = Path(path).name
    return "int8" if name.endswith(".int8.onnx") else "fp16" if name.endswith(".fp16.onnx") else "fp32"
