"""Mask-aligned augmentation for training batches (numpy and scikit-image only).

One affine map per sample (flip, 90-degree turns, free rotation, zoom, random crop or pad),
optionally after a smooth elastic displacement of the output grid, sends every output pixel to
one input coordinate; the image is read there bilinearly and the label map by nearest
neighbour, so the mask stays aligned and keeps its exact labels. Beyond the image edge both
are mirrored (numpy's "reflect": d c b | a b c d | c b a), which is also how ``fit_to_size``
and ``unet_keras.preprocess.pad_to_multiple`` pad (the resampling: ``unet_keras.data.warp``).
Stain jitter, a Gaussian blur (``blur``: half the samples, as a soft focus or another lens) and
colour jitter then touch the image only. With ``colour_transfer`` half of the samples first take
another stain's colours (RandStainNA, Shen et al. 2022): the image's L*a*b* mean and sd are
mapped (Reinhard, ``unet_keras.colour.normalise``) onto statistics drawn from a Gaussian around the
training images' own, the way ``predict --colour auto`` maps an image of another laboratory.

Speed, measured on the shared 2-core dev machine under load (one thread, best of 5 x 200):
2.0 ms per 120x120 -> 128x128 sample with every option on, 1.2 ms geometry only; 2.1 ms from
300x300. ``scipy.ndimage.affine_transform`` took 1.6 ms for the three channels alone and
skimage's HSV round trip 6 ms, hence the hand-written gather and the linear hue/saturation form.
``blur`` 1.5 adds 0.45 ms a sample on average (3.73 against 3.28 ms over 200 samples, zoom
0.5-2x, two trainings sharing the cores).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.color import hed_from_rgb, rgb_from_hed

from unet_keras.colour import colour_features, normalise
from unet_keras.config import MAX_COLOUR_STRENGTH
from unet_keras.data.warp import ELASTIC_GRID, output_grid, warp
from unet_keras.preprocess import to_model_input

# Tellez et al. 2018 jitter each haematoxylin-eosin-DAB channel as s * c + t; these are the
# half-widths of s around 1 and of t around 0. t is in skimage's rgb2hed units, where stained
# pixels of the real data reach 0.05-0.15: a shift of 0.03 in all three stains would cut the
# white background's green to 39%, while 0.01 keeps every channel above 70%.
STAIN_SCALE = 0.1
STAIN_SHIFT = 0.01
_LOG_ADJUST = np.float32(-np.log(1e-6))  # rgb2hed divides optical density by this
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
TRANSFER_PROBABILITY = 0.5  # share of samples given drawn colour statistics
BLUR_PROBABILITY = 0.5  # share of samples blurred when ``blur`` is on
_MIN_TRANSFER_SD = 1.0  # L*a*b* units: a drawn sd below this would flatten the image


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One sample's random draw; the defaults are the identity (centre crop or pad, no colour).

    Geometry reads: flip left-right, then ``np.rot90`` ``rot90`` times, then rotate by ``angle``
    degrees and zoom by ``scale`` (> 1 magnifies) about the window centre, which sits ``shift``
    input pixels (row, col) from the image centre.
    """

    flip: bool = False
    rot90: int = 0
    angle: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    stain_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    stain_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    brightness: float = 0.0
    contrast: float = 1.0
    gamma: float = 1.0
    hue: float = 0.0  # turns about the grey axis (1.0 = 360 degrees)
    saturation: float = 1.0
    # Elastic displacement (rows, then cols) of the output grid at the ELASTIC_GRID lattice
    # points, in output pixels, flattened; () is none.
    elastic: tuple[float, ...] = ()
    # L*a*b* mean and sd (6 numbers) the image's colours are mapped onto first; () is none.
    colour_target: tuple[float, ...] = ()
    blur: float = 0.0  # Gaussian blur's standard deviation in output pixels (0: none)


_IDENTITY = AugmentParams()
# The parameters each Augmenter option switches.
_FIELDS = {
    "flips": ("flip",), "rot90": ("rot90",), "free_rotation": ("angle",),
    "stain": ("stain_scale", "stain_shift"),
    "colour": ("brightness", "contrast", "gamma", "hue", "saturation"),
}


class Augmenter:
    """Random, mask-aligned training augmentation to ``image_size`` squares.

    Args:
        image_size: output height and width.
        flips, rot90, free_rotation: geometric options (free rotation is any angle).
        scale_range: (low, high) zoom, drawn log-uniformly; (1, 1) disables zoom.
        stain: haematoxylin-eosin-DAB stain jitter.
        colour: brightness, contrast, gamma, hue and saturation jitter.
        colour_strength: multiplies the half-width of each colour jitter range (1: brightness
            +-0.06, contrast 1 +-0.15, gamma 0.85-1/0.85, hue +-0.03 turn, saturation 1 +-0.2;
            2: twice as far); the draws are the same numbers, scaled.
        elastic: standard deviation, in output pixels, of the elastic displacement at each
            lattice point (0: none). Drawn from a second generator, so that the other
            parameters are the same draws with it on or off.
        colour_transfer: K > 0 maps ``TRANSFER_PROBABILITY`` of the samples onto colour
            statistics drawn from N(mean, K**2 cov) of ``colour_reference`` (0: none); from a
            third generator, likewise.
        colour_reference: the training images' ``unet_keras.colour.fit_reference``.
        blur: B > 0 blurs ``BLUR_PROBABILITY`` of the samples by a Gaussian whose standard
            deviation is drawn uniformly in 0..B output pixels (0: none); from a fourth
            generator, so the other draws stay as they are.
        seed: seeds the generators the object holds; the same seed gives the same sequence.
    """

    def __init__(
        self, image_size: int, flips: bool = True, rot90: bool = True, free_rotation: bool = True,
        scale_range: tuple[float, float] = (0.8, 1.25), stain: bool = True, colour: bool = True,
        colour_strength: float = 1.0, elastic: float = 0.0, seed: int = 0,
        colour_transfer: float = 0.0, colour_reference: dict | None = None, blur: float = 0.0,
    ) -> None:
        low, high = (float(v) for v in scale_range)
        if image_size < 1:
            raise ValueError(f"image_size={image_size}: expected a positive integer")
        if not 0 < low <= high:
            raise ValueError(f"scale_range={scale_range}: expected 0 < low <= high")
        if not 0 <= colour_strength <= MAX_COLOUR_STRENGTH:
            raise ValueError(f"colour_strength={colour_strength}: expected 0..{MAX_COLOUR_STRENGTH}"
                             " (contrast and saturation would reach zero beyond)")
        if not elastic >= 0:
            raise ValueError(f"elastic={elastic}: expected a standard deviation >= 0 (pixels)")
        if not blur >= 0:
            raise ValueError(f"blur={blur}: expected a standard deviation >= 0 (pixels)")
        if not colour_transfer >= 0 or (colour_transfer and not colour_reference):
            raise ValueError(f"colour_transfer={colour_transfer}: expected >= 0, and a colour "
                             "reference of the training images (more than 6) when > 0")
        self.image_size = int(image_size)
        self.flips, self.rot90, self.free_rotation = flips, rot90, free_rotation
        self.scale_range = (low, high)
        self.stain, self.colour, self.elastic = stain, colour, float(elastic)
        self.colour_strength = float(colour_strength)
        self._rng = np.random.default_rng(seed)
        self._elastic_rng = np.random.default_rng([seed, 1])
        self.colour_transfer, self.colour_reference = float(colour_transfer), colour_reference
        self._transfer_rng = np.random.default_rng([seed, 2])
        self.blur = float(blur)
        self._blur_rng = np.random.default_rng([seed, 3])

    def sample(self, shape: tuple[int, int]) -> AugmentParams:
        """Draw parameters for an input of (height, width) ``shape``.

        Every value is drawn whatever the options, then disabled ones are set to the identity,
        so two augmenters with one seed make the same geometry with colour on or off. The
        elastic displacement comes from its own generator, drawn only when it is on.
        """
        rng = self._rng
        flip, turns = bool(rng.random() < 0.5), int(rng.integers(4))
        angle = float(rng.uniform(-180, 180))
        scale = float(np.exp(rng.uniform(*np.log(self.scale_range))))
        # Crop: the window stays inside the image. Pad: the image stays inside the window.
        half = np.abs(np.asarray(shape, float) - self.image_size / scale) / 2
        shift = tuple(float(v) for v in rng.uniform(-half, half))
        stain_scale = tuple(float(v) for v in rng.uniform(1 - STAIN_SCALE, 1 + STAIN_SCALE, 3))
        stain_shift = tuple(float(v) for v in rng.uniform(-STAIN_SHIFT, STAIN_SHIFT, 3))
        k = self.colour_strength
        brightness = float(rng.uniform(-0.06 * k, 0.06 * k))
        contrast = float(rng.uniform(1 - 0.15 * k, 1 + 0.15 * k))
        gamma = float(np.exp(rng.uniform(np.log(0.85) * k, -np.log(0.85) * k)))
        hue, saturation = float(rng.uniform(-0.03 * k, 0.03 * k)), float(rng.uniform(1 - 0.2 * k, 1 + 0.2 * k))
        drawn = AugmentParams(
            flip, turns, angle, scale, shift, stain_scale, stain_shift,
            brightness, contrast, gamma, hue, saturation,
        )
        options = {"flips": self.flips, "rot90": self.rot90, "free_rotation": self.free_rotation,
                   "stain": self.stain, "colour": self.colour}
        disabled = [name for option, on in options.items() if not on for name in _FIELDS[option]]
        drawn = dataclasses.replace(drawn, **{name: getattr(_IDENTITY, name) for name in disabled})
        if self.elastic:
            lattice = self._elastic_rng.normal(0.0, self.elastic, 2 * ELASTIC_GRID**2)
            drawn = dataclasses.replace(drawn, elastic=tuple(float(v) for v in lattice))
        if self.colour_transfer and self._transfer_rng.random() < TRANSFER_PROBABILITY:
            reference = self.colour_reference
            target = self._transfer_rng.multivariate_normal(
                reference["mean"], self.colour_transfer**2 * np.asarray(reference["cov"]))
            target[3:] = np.maximum(target[3:], _MIN_TRANSFER_SD)
            drawn = dataclasses.replace(drawn, colour_target=tuple(float(v) for v in target))
        if self.blur:
            blurred, sigma = self._blur_rng.random() < BLUR_PROBABILITY, self._blur_rng.random()
            drawn = dataclasses.replace(drawn, blur=float(sigma * self.blur) if blurred else 0.0)
        return drawn

    def apply(
        self, image: np.ndarray, mask: np.ndarray, params: AugmentParams
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply given parameters; see ``__call__`` for the arrays."""
        x, mask = _checked(image, mask)
        matrix, offset = _affine(params, x.shape[:2], self.image_size)
        grid = output_grid(params.elastic, self.image_size)
        x, mask = warp(x, mask, matrix, offset, grid)
        if params.colour_target:  # the whole image's statistics, as predict measures them
            crop = np.round(x * 255.0).astype(np.uint8)
            x = normalise(crop, {}, np.asarray(params.colour_target),
                          colour_features(image)).astype(np.float32) / np.float32(255.0)
        if not _is_identity(params, "stain"):
            x = stain_jitter(x, params.stain_scale, params.stain_shift)
        if params.blur:  # the optics come before the camera's colour response
            x = gaussian_filter(x, sigma=(params.blur, params.blur, 0), mode="reflect")
        if not _is_identity(params, "colour"):
            x = colour_jitter(x, params)
        return x, mask

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Augment one example.

        Args:
            image: uint8 (H, W, 3) RGB (other dtypes go through ``to_model_input``).
            mask: (H, W) label map.

        Returns:
            (image, mask): float32 (S, S, 3) in [0, 1] and a label map (S, S) of the mask's
            dtype holding only values found in the input mask, S = ``image_size``.
        """
        return self.apply(image, mask, self.sample(np.shape(mask)))

    def center(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The validation path: ``fit_to_size`` to ``image_size``, no randomness."""
        return fit_to_size(image, mask, self.image_size)


def fit_to_size(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop or reflect-pad each axis to ``size``: the identity ``AugmentParams`` exactly.

    Returns:
        (float32 (size, size, 3) image in [0, 1], (size, size) label map).
    """
    x, mask = _checked(image, mask)
    crop, pad = [], []
    for n in mask.shape:
        # Same rounding as _affine, so an odd surplus or shortfall puts the extra pixel alike.
        start = (n - size + 1) // 2
        crop.append(slice(max(start, 0), max(start, 0) + size))
        pad.append((max(-start, 0), max(size - n + start, 0)))
    x = np.pad(x[crop[0], crop[1]], pad + [(0, 0)], mode="reflect")
    return x, np.pad(mask[crop[0], crop[1]], pad, mode="reflect")


def _checked(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model-input float image and the mask, which must have the image's height and width."""
    x = to_model_input(image)
    mask = np.asarray(mask)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {x.shape[:2]}; "
                         "expected a (H, W) label map for a (H, W, 3) image")
    return x, mask


def stain_jitter(
    image: np.ndarray, scale: tuple[float, float, float], shift: tuple[float, float, float]
) -> np.ndarray:
    """Scale and shift the haematoxylin, eosin and DAB channels of a float RGB image in [0, 1].

    Equals ``hed2rgb(rgb2hed(image) * scale + shift)`` from skimage.color wherever rgb2hed's
    clamp of negative stains to 0 does not bite, computed as one 3x3 matrix on optical density
    in float32 (rgb2hed and hed2rgb each work in float64 and take longer than this whole step).
    """
    h_from_rgb = hed_from_rgb.astype(np.float32)
    to_rgb = rgb_from_hed.astype(np.float32)
    matrix = h_from_rgb @ (np.asarray(scale, np.float32)[:, None] * to_rgb)
    bias = (np.asarray(shift, np.float32) * _LOG_ADJUST) @ to_rgb
    density = -np.log(np.maximum(image, np.float32(1e-6))).reshape(-1, 3)
    return np.clip(np.exp(-(density @ matrix + bias)), 0.0, 1.0).reshape(image.shape)


def colour_jitter(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Hue, saturation, contrast, brightness and gamma on a float RGB image in [0, 1].

    Hue turns colours about the grey axis and saturation scales their distance from grey
    (luma): both are linear, so together with contrast (about the image's mean luma) and
    brightness they make one 3x3 matrix and an offset, where an HSV round trip cost 6 ms.
    """
    theta = 2 * np.pi * params.hue
    axis = np.full(3, 1 / np.sqrt(3))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    turn = np.cos(theta) * np.eye(3) + np.sin(theta) * cross
    turn += (1 - np.cos(theta)) * np.outer(axis, axis)  # Rodrigues' rotation formula
    # Row vectors: x @ turn.T turns, then x @ grey mixes in saturation.
    grey = params.saturation * np.eye(3) + (1 - params.saturation) * np.outer(_LUMA, np.ones(3))
    matrix = (turn.T @ grey * params.contrast).astype(np.float32)
    mean = float(image.reshape(-1, 3).mean(axis=0) @ _LUMA)
    offset = np.float32(mean * (1 - params.contrast) + params.brightness)
    out = np.clip((image.reshape(-1, 3) @ matrix).reshape(image.shape) + offset, 0.0, 1.0)
    if params.gamma != 1.0:
        out = out ** np.float32(params.gamma)
    return out.astype(np.float32, copy=False)


def _is_identity(params: AugmentParams, option: str) -> bool:
    return all(getattr(params, name) == getattr(_IDENTITY, name) for name in _FIELDS[option])


def _affine(
    params: AugmentParams, shape: tuple[int, int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) sending output (row, col) to input coordinates: matrix @ out + offset."""
    quarter = np.array([[0, 1], [-1, 0]])  # np.rot90(a, 1)[i, j] = a[j, W - 1 - i], centred
    matrix = np.linalg.matrix_power(quarter, params.rot90 % 4)
    if params.flip:
        matrix = np.diag([1, -1]) @ matrix
    if params.angle:
        t = np.deg2rad(params.angle)
        matrix = matrix @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    matrix = matrix / params.scale
    centre_in = (np.asarray(shape, float) - 1) / 2 + np.asarray(params.shift, float)
    centre_out = np.full(2, (size - 1) / 2)
    # Whole-pixel offsets keep flips, turns and crops exact copies (no interpolation blur).
    offset = np.floor(centre_in - matrix @ centre_out + 0.5)
    return matrix, offset
