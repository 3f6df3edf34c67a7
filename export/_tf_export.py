"""Route tf2onnx, run as ``python -m export._tf_export MODEL OUT [--opset N]``.

The Keras backend is fixed when keras is first imported, so reloading the JAX-trained ``.keras``
file under TensorFlow needs its own process; ``export.onnx_export`` starts this one with
``KERAS_BACKEND=tensorflow``. Writes a raw ONNX file (input ``image``, output ``probability``,
dynamic N, H, W); the parity gate and the metadata are the parent's job.
"""

from __future__ import annotations

import argparse
import os
import sys

INPUT_NAME, OUTPUT_NAME = "image", "probability"  # as in unet_keras.model


def export_tf2onnx(model_path: str, out_path: str, opset: int | None) -> None:
    import keras
    import tensorflow as tf
    import tf2onnx

    from unet_keras.model import load_model

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"keras backend is {keras.backend.backend()!r}; "
                           "run with KERAS_BACKEND=tensorflow")
    try:
        # tf2onnx 1.17 still uses numpy aliases removed in numpy 2; Keras' own ONNX export
        # applies this same patch before calling tf2onnx.
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()
    except ImportError:
        pass
    model = load_model(model_path)
    spec = [tf.TensorSpec((None, None, None, 3), tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=spec)
    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset, output_path=out_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export._tf_export")
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--opset", type=int)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        export_tf2onnx(args.model, args.out, args.opset)
    except Exception as err:  # reported to the parent through stderr and the exit status
        print(f"tf2onnx export failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
