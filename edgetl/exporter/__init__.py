"""Export: a checkpoint -> a bundle (fp32 ONNX with its parity proof, metadata and manifest), plus the
int8 variant (searched in ``edgetl.quantization``) and the float16 one.

    from edgetl.exporter import export          # also edgetl.export / edgetl.ExportConfig
"""
from .export_run import Bundle, export

__all__ = ["export", "Bundle"]
