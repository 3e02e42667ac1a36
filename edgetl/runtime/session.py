"""onnxruntime sessions, built in one place: options, providers, and a clear line when a model won't load.

    sess = ort_session("model.int8.onnx", threads=2)          # what export, quantize, bench and Predictor use
    use, missing = resolve_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])
    so = session_options(threads=1, spinning=False)            # for code that builds its own session
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .errors import ArtifactError, RuntimeInputError


def session_options(threads: int = 0, *, spinning: bool | None = None, optimize: bool = True):
    """The one ``SessionOptions`` builder: intra-op threads (0: onnxruntime's default), quiet logs,
    optionally the intra-op thread pool's spin-wait off (for many sessions sharing few cores), and graph
    optimizations off (``optimize=False``: to read a graph's intermediate tensors as written)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


def ort_session(path: Path | bytes, threads: int = 0, providers=None, *, spinning: bool | None = None,
                optimize: bool = True):
    """The one onnxruntime session builder (export, quantize, bench and the Predictor share its options)."""
    import onnxruntime as ort

    return ort.InferenceSession(path if isinstance(path, bytes) else str(path),
                                session_options(threads, spinning=spinning, optimize=optimize),
                                providers=list(providers or ["CPUExecutionProvider"]))


def resolve_providers(wanted: Sequence[str] | None, *, explicit: bool = False) -> tuple[list[str], list[str]]:
    """(providers to use, wanted ones missing here) for a fallback list such as a target's.

    A fallback list skips what is not installed (CPU at worst); providers the user named
    (``explicit``) must all be installed, or it is one clear error.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = list(wanted or ["CPUExecutionProvider"])
    missing = [p for p in wanted if p not in available]
    if explicit and missing:
        raise RuntimeInputError(f"execution provider(s) {', '.join(missing)} are not installed here (available: "
                                f"{', '.join(available)}): pip install onnxruntime-gpu for CUDA/TensorRT, "
                                f"or drop --providers")
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"], missing


def load_session(model: Path, providers, threads: int, *, spinning: bool | None = None):
    """A session on the available subset of ``providers``, and the ones that are missing."""
    use, missing = resolve_providers(providers)
    try:
        sess = ort_session(model, threads, use, spinning=spinning)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types; name the file and stop here
        raise ArtifactError(f"{model}: onnxruntime cannot load it ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]}); re-export it") from None
    return sess, missing
