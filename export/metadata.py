"""The metadata an exported ONNX file carries, so that the file alone is enough to serve.

Each entry is stored JSON-encoded in the model's ``metadata_props`` under ``unet_keras.<key>``;
onnxruntime exposes them as ``session.get_modelmeta().custom_metadata_map``. Numpy only.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

PREFIX = "unet_keras."
# config: UNetConfig.to_dict(); thresholds: one per output channel; preprocessing: the contract
# text; versions: package versions at export; parity: figures of the gate; route, opset,
# precision; variant_check: Dice and latency of an fp16/int8 variant against its fp32 model;
# source_parity: in a variant, the fp32 file's parity figures (measured on that file, not this).
KEYS = ("config", "thresholds", "preprocessing", "versions", "parity", "route", "opset", "precision",
        "variant_check", "source_parity")
REQUIRED_KEYS = ("config", "thresholds")


def set_metadata(model, entries: Mapping[str, Any], drop: Sequence[str] = ()) -> None:
    """Write ``entries`` into an ``onnx.ModelProto``'s metadata_props, replacing same-named keys
    and removing the keys in ``drop``."""
    unknown = sorted(set(entries) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown metadata keys {unknown}; accepted keys: {list(KEYS)}")
    encoded = {PREFIX + key: json.dumps(value, sort_keys=True) for key, value in entries.items()}
    removed = {PREFIX + key for key in drop}
    kept = [(p.key, p.value) for p in model.metadata_props
            if p.key not in encoded and p.key not in removed]
    del model.metadata_props[:]
    for key, value in kept + sorted(encoded.items()):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def decode_metadata(custom_map: Mapping[str, str]) -> dict[str, Any]:
    """``{"unet_keras.<key>": json}`` -> ``{key: value}``; other keys are ignored."""
    out = {}
    for key, value in custom_map.items():
        if key.startswith(PREFIX):
            try:
                out[key[len(PREFIX):]] = json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(f"metadata {key!r} is not valid JSON ({err})") from err
    return out
