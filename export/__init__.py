"""ONNX export (Keras -> ONNX with a parity gate) and the keras-free onnxruntime deployment side.

The export side (``export.onnx_export``, ``export.precision``) needs keras, jax, tensorflow and
the converters; the runtime side (``export.runtime``, ``export.tiling``, ``export.metadata``)
imports numpy, onnxruntime and the package's numpy pre/postprocessing only. Nothing is imported
here, so ``import export.runtime`` stays keras-free.
"""
