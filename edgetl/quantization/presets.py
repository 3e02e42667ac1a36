"""int8 presets per kind of target, the options of the int8 search, and the settings that reproduce a model."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class QuantPreset:
    """How to quantize for one kind of target."""

    name: str
    activation_type: str  # "QUInt8" | "QInt8"
    weight_type: str  # "QInt8"
    reduce_range: bool  # 7-bit dense weights: avoids int16 saturation of AVX2's vpmaddubsw without VNNI
    symmetric_activations: bool
    formats: tuple[str, ...]  # formats of the all-int8 candidates: "QDQ" (portable) / "QOperator" (ORT CPU)
    depthwise_8bit: bool  # a candidate with depthwise kernels in full 8 bits (widened kernels: never saturate)
    op_types_float: tuple[str, ...]  # op types int8 makes slower on this target: a candidate keeps them float
    note: str


PRESETS: dict[str, QuantPreset] = {p.name: p for p in [
    QuantPreset("x86-avx2", "QUInt8", "QInt8", True, False, ("QOperator", "QDQ"), True,
                ("Add", "Mul", "Sigmoid", "HardSigmoid", "HardSwish", "GlobalAveragePool"),
                "AVX2 without VNNI: 7-bit dense weights keep vpmaddubsw from saturating; depthwise in 8 bits"),
    QuantPreset("x86-vnni", "QUInt8", "QInt8", False, False, ("QOperator", "QDQ"), False, ("Sigmoid", "HardSigmoid"),
                "AVX512-VNNI / AVX-VNNI / AMX: full 8-bit range, dot-product instructions"),
    QuantPreset("arm64", "QUInt8", "QInt8", False, False, ("QDQ", "QOperator"), False, ("Sigmoid", "HardSigmoid"),
                "ARM's int8 kernels (NEON sdot/udot on ARMv8.2 dot-product cores such as the Pi 5's Cortex-A76 and "
                "Orin's A78AE; SMMLA where i8mm is present; widening multiplies before that) accumulate 8-bit x "
                "8-bit products in 32 bits with no saturating 16-bit pair-add: full 8-bit weights are exact there "
                "(x86-avx2's 7-bit weights would throw a bit away). U8S8 QDQ, per-channel weights, as onnxruntime's "
                "arm64 kernels take it"),
    QuantPreset("tensorrt", "QInt8", "QInt8", False, True, ("QDQ",), False, (),
                "TensorRT takes explicit QDQ with symmetric int8 activations and per-channel weights"),
]}

# the settings that reproduce an int8 model (bundle.json and the model's metadata record them)
QUANT_SETTINGS = ("method", "preset", "format", "activation_type", "weight_type", "per_channel", "reduce_range",
                  "calib_method", "calib_size", "nodes_excluded", "op_types_float")


@dataclasses.dataclass(frozen=True)
class QuantOptions:
    """What the int8 search may do and what it must reach (ExportConfig's int8 fields fill it)."""

    preset: str = "auto"
    per_channel: bool = True
    calib_method: str = "auto"  # auto: minmax first; percentile (unbounded activations) when the target is missed
    calib_size: int | None = None  # images of ``calib`` used first (None: 200); auto also tries them all
    max_drop: float = 0.5
    min_agreement: float = 0.99
    report_sensitivity: bool = True
    fallback: bool = True  # layers back to float as the last resort
