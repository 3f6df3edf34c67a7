"""White blood cell segmentation: a Keras 3 U-Net trained on JAX, served through ONNX.

Importing this package does not import keras. The Keras backend is taken from the standard
``KERAS_BACKEND`` environment variable and defaults to ``jax``; it must be set before keras is
first imported, which is why the default is applied here, at package import time.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

__version__ = "0.1.0"
