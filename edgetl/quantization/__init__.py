"""int8 for a device: presets per CPU (``presets``), ONNX passes (``recipes``), the search that builds
candidates (``candidates``), scores them (``scoring``) and chooses one (``choice``), orchestrated by
``search``; and quantization-aware training on the QDQ graph (``qat``). Modules import onnx and
onnxruntime.quantization lazily; ``qat`` imports torch."""
