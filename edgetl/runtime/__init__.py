"""The device side: what ``pip install edgetl`` runs on a robot. onnxruntime, numpy and Pillow only;
it imports nothing else of edgetl (tests/test_structure.py holds it to that).

    from edgetl.runtime import Predictor
    p = Predictor("bundle/")                  # int8 if the bundle has it, else fp32
    p.predict("frame.jpg", top_k=3)           # -> Prediction(label, prob, top_k=[(label, prob), ...])

Modules, one job each: ``predictor`` (Predictor), ``preprocess`` (an image -> the model's tensor, as
trained), ``bundle`` (the bundle reader and its format), ``verify`` (edgetl verify), ``session``
(onnxruntime session options and providers), ``cpu`` (CPU facts), ``timing`` (timing loops),
``metrics`` (parity figures), ``errors`` (the error family).
"""
from .cpu import float16_unsupported
from .predictor import STAGES, Prediction, Predictor, variant_of_file
from .session import ort_session, resolve_providers
from .verify import verify_bundle

__all__ = ["Predictor", "Prediction", "verify_bundle", "resolve_providers", "ort_session", "float16_unsupported",
           "STAGES", "variant_of_file"]
