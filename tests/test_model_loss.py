import math

import keras
import numpy as np
import pytest

from tests.conftest import run_python
from unet_keras.config import SEED_RECIPE, ConfigError, UNetConfig
from unet_keras.losses import BCEDiceLoss, bce_dice
from unet_keras.model import build_unet, load_model, ModelLoadError
from unet_keras.preprocess import crop_to, pad_to_multiple

TINY = dict(depth=2, base_filters=4, image_size=32)


def test_config_round_trip(tmp_path):
    config = UNetConfig(depth=3, base_filters=8, out_channels=2, dropout=0.2,
                        thresholds=(0.4, 0.6), scale_range=(0.5, 2.0), image_size=64)
    config.save(tmp_path / "config.json")
    assert UNetConfig.load(tmp_path / "config.json") == config
    rebuilt = build_unet(UNetConfig.load(tmp_path / "config.json"))
    assert rebuilt.count_params() == build_unet(config).count_params()


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="out_channels=3"):
        UNetConfig(out_channels=3)
    with pytest.raises(ConfigError, match="image_size=100"):
        UNetConfig(image_size=100)
    with pytest.raises(ConfigError, match="init='glorot'"):
        UNetConfig(init="glorot")
    with pytest.raises(ConfigError, match=r"ema=1.0 \(expected 0 <= ema < 1"):
        UNetConfig(ema=1.0)
    with pytest.raises(ConfigError, match=r"elastic=-2.0 \(expected a standard deviation >= 0"):
        UNetConfig(elastic=-2.0)
    with pytest.raises(ConfigError, match="checkpoint_metric='best'"):
        UNetConfig(checkpoint_metric="best")
    with pytest.raises(ConfigError, match="checkpoint_metric='mean' with out_channels=1"):
        UNetConfig(checkpoint_metric="mean", out_channels=1)
    with pytest.raises(ConfigError, match="max_filters=8 .*base_filters 12"):
        UNetConfig(max_filters=8)
    with pytest.raises(ConfigError, match=r"nucleus_weight=0.0 \(expected > 0"):
        UNetConfig(nucleus_weight=0.0)
    (tmp_path / "config.json").write_text('{"depth": 2, "colour": "red"}')
    with pytest.raises(ConfigError, match="config.json.*unknown config keys"):
        UNetConfig.load(tmp_path / "config.json")
    for bad, message in ((dict(image_size=0), "image_size=0 .expected a positive multiple"),
                         (dict(learning_rate=float("nan")), "learning_rate must be positive"),
                         (dict(learning_rate=float("inf")), "learning_rate must be positive"),
                         (dict(scale_range=(2, 1)), r"scale_range=\(2.0, 1.0\) .expected LOW"),
                         (dict(scale_range=(-1, 0)), r"scale_range=\(-1.0, 0.0\)")):
        with pytest.raises(ConfigError, match=message):
            UNetConfig(**bad)
    # A model's config.json with thresholds outside [0, 1] is refused when read, naming it.
    # (0 would make every pixel cell; the per-cell confidence needs a margin on both sides.)
    for thresholds in ("[1.5, -0.2]", "[0.5, 0.0]"):
        (tmp_path / "config.json").write_text(f'{{"out_channels": 2, "thresholds": {thresholds}}}')
        with pytest.raises(ConfigError, match=r"config.json: .*strictly between 0 and 1"):
            UNetConfig.load(tmp_path / "config.json")


def unet_parameters(base: int, depth: int, outputs: int, cap: int | None = None) -> int:
    """Parameters of the U-Net worked out from its description: per level two 3x3 convs without
    bias, each with batch norm (4 per channel); a 2x2 transposed conv with bias going up; the
    decoder's first conv reads the concatenation (twice the channels); a 1x1 sigmoid head.
    ``cap``: no level has more filters than this."""
    def block(cin, c):
        return 9 * cin * c + 4 * c + 9 * c * c + 4 * c

    def width(level):
        return min(base * 2**level, cap or base * 2**level)

    total, cin = 0, 3
    for level in range(depth + 1):  # encoder levels, then the bottleneck
        c = width(level)
        total, cin = total + block(cin, c), c
    for level in reversed(range(depth)):
        c = width(level)
        total, cin = total + 4 * cin * c + c + block(2 * c, c), c
    return total + cin * outputs + outputs


def test_seed_architecture_parameter_count():
    # base 16, depth 4, one output: the 1.95 M-parameter U-Net of the seed recipe.
    assert unet_parameters(16, 4, 1) == 1_945_521
    assert build_unet(UNetConfig(**SEED_RECIPE)).count_params() == 1_945_521
    # The default: 12 base filters and two outputs.
    assert build_unet(UNetConfig()).count_params() == unet_parameters(12, 4, 2) == 1_095_602
    assert build_unet(UNetConfig(depth=3, base_filters=8)).count_params() == unet_parameters(8, 3, 2)


def test_max_filters_caps_the_deep_levels():
    config = UNetConfig(base_filters=16, max_filters=112)
    assert [config.filters(level) for level in range(5)] == [16, 32, 64, 112, 112]
    assert UNetConfig(base_filters=16).filters(4) == 256  # 0: no cap
    capped = build_unet(config).count_params()
    assert capped == unet_parameters(16, 4, 2, cap=112) == 1_052_722
    assert capped < unet_parameters(16, 4, 2)  # the cap is where the parameters go


def kernel_scales(model) -> dict[str, tuple[float, float, int]]:
    """Layer name -> (kernel std, kernel max |w|, fan_in), fan_in as PyTorch counts it."""
    scales = {}
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            w = np.asarray(layer.kernel)
            # Keras: (kh, kw, in, out); transposed (kh, kw, out, in): PyTorch's fan_in is
            # kh * kw * shape[-2] in both cases.
            scales[layer.name] = (w.std(), np.abs(w).max(), w.shape[0] * w.shape[1] * w.shape[2])
    return scales


def test_pytorch_init_matches_pytorch_default_scale():
    import torch

    from benchmarks.torch_unet import TorchUNet

    config = UNetConfig(depth=3, base_filters=8, init="pytorch")
    keras.utils.set_random_seed(0)
    scales = kernel_scales(build_unet(config))
    assert len(scales) == 2 * 4 + 3 + 2 * 3 + 1
    for name, (std, biggest, fan_in) in scales.items():
        bound = 1 / math.sqrt(fan_in)
        assert biggest <= bound * (1 + 1e-6), name
        assert std == pytest.approx(bound / math.sqrt(3), rel=0.25), name
    torch.manual_seed(0)
    torch_stds = sorted(p.std().item() for n, p in TorchUNet(config).named_parameters()
                        if p.dim() == 4)
    assert np.allclose(sorted(s[0] for s in scales.values()), torch_stds, rtol=0.25)
    # he_normal is sqrt(6) times larger: the graph of the models trained before the option.
    keras.utils.set_random_seed(0)
    old = kernel_scales(build_unet(UNetConfig(depth=3, base_filters=8, init="he_normal")))
    assert old["enc1_conv1"][0] / scales["enc1_conv1"][0] == pytest.approx(math.sqrt(6), rel=0.2)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_model_output_shape_at_odd_sizes(depth, channels):
    config = UNetConfig(depth=depth, base_filters=4, out_channels=channels, image_size=2**depth * 4)
    model = build_unet(config)
    image = np.random.default_rng(0).random((2, 45, 61, 3), dtype=np.float32)
    padded, size = pad_to_multiple(image, config.multiple)
    assert padded.shape[1] % config.multiple == 0 and padded.shape[2] % config.multiple == 0
    out = crop_to(np.asarray(model.predict(padded, verbose=0)), size)
    assert out.shape == (2, 45, 61, channels)
    assert np.all((out >= 0) & (out <= 1))


def test_bce_dice_by_hand():
    # truth [[1,0],[0,0]], prediction [[.8,.2],[.2,.2]]:
    # BCE = mean(-ln .8 four times) = 0.223144; Dice = (2*.8 + 1) / (1 + 1.4 + 1) = 2.6/3.4.
    y_true = np.array([[1, 0], [0, 0]], np.float32).reshape(1, 2, 2, 1)
    y_pred = np.array([[0.8, 0.2], [0.2, 0.2]], np.float32).reshape(1, 2, 2, 1)
    expected = -math.log(0.8) + (1 - 2.6 / 3.4)
    assert float(BCEDiceLoss()(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    # Logits give the same value as their sigmoid probabilities.
    logits = np.log(y_pred / (1 - y_pred))
    assert float(BCEDiceLoss(from_logits=True)(y_true, logits)) == pytest.approx(expected, rel=1e-5)


def test_bce_dice_two_channels_weighted():
    y_true = np.zeros((1, 2, 2, 2), np.float32)
    y_true[0, 0, 0] = 1
    y_pred = np.full((1, 2, 2, 2), 0.2, np.float32)
    y_pred[0, 0, 0] = 0.8
    y_pred[..., 1] = 0.5  # channel 1: BCE = ln 2 on all four; Dice = (2*.5 + 1)/(1 + 2 + 1) = .5
    ch0 = -math.log(0.8) + (1 - 2.6 / 3.4)
    ch1 = math.log(2) + 0.5
    loss = BCEDiceLoss(channel_weights=[1.0, 3.0])
    assert float(loss(y_true, y_pred)) == pytest.approx((ch0 + 3 * ch1) / 4, rel=1e-5)
    assert float(np.mean(bce_dice(y_true, y_pred))) == pytest.approx((ch0 + ch1) / 2, rel=1e-5)


def test_nucleus_weight_weights_the_loss_channels():
    assert UNetConfig().loss_channel_weights() is None
    assert UNetConfig(nucleus_weight=2.0).loss_channel_weights() == [1.0, 2.0]
    # One output: no nucleus channel to weigh.
    assert UNetConfig(nucleus_weight=2.0, out_channels=1).loss_channel_weights() is None
    # Training compiles the weights into its loss.
    from unet_keras.train import compile_model

    config = UNetConfig(**TINY, nucleus_weight=3.0)
    model = build_unet(config)
    compile_model(model, config, steps_per_epoch=1)
    assert model.loss.channel_weights == [1.0, 3.0]


def test_boundary_band_marks_two_pixels_either_side_of_each_edge():
    from unet_keras.losses import boundary_band

    mask = np.zeros((1, 12, 12, 1), np.float32)
    mask[0, 4:10, 4:10] = 1  # a 6 x 6 square
    band = np.asarray(boundary_band(mask))[0, ..., 0]
    expected = np.zeros((12, 12))
    expected[2:12, 2:12] = 1  # 2 px outside the square, cut at the image's border
    expected[6:8, 6:8] = 0  # more than 2 px inside it
    np.testing.assert_array_equal(band, expected)
    # A cell running off the image has no band along the border; anti-aliased edges give less.
    half = np.zeros((1, 8, 8, 1), np.float32)
    half[0, :, 4:] = 1
    half[0, :, 3] = 0.5
    band = np.asarray(boundary_band(half, width=3))[0, ..., 0]
    np.testing.assert_allclose(band[0], [0, 0, 0.5, 1, 0.5, 0, 0, 0])
    assert (band == band[0]).all()


def test_boundary_weight_weighs_the_cross_entropy_near_edges():
    from unet_keras.losses import boundary_band

    rng = np.random.default_rng(5)
    y_true = np.zeros((2, 16, 16, 2), np.float32)
    y_true[:, 3:11, 5:13] = 1
    y_pred = rng.uniform(0.05, 0.95, y_true.shape).astype(np.float32)
    band = np.asarray(boundary_band(y_true))
    bce = -(y_true * np.log(y_pred) + (1 - y_true) * np.log(1 - y_pred))
    plain = BCEDiceLoss()
    weighted = BCEDiceLoss(boundary_weight=3.0)
    extra = 3.0 * (band * bce).mean()  # the BCE's mean gains 3x its band pixels' share
    assert float(weighted(y_true, y_pred)) == pytest.approx(float(plain(y_true, y_pred)) + extra,
                                                            rel=1e-5)
    assert extra > 0
    assert float(BCEDiceLoss(boundary_weight=0.0)(y_true, y_pred)) == float(plain(y_true, y_pred))
    # Training compiles it from the config, and a negative weight is refused.
    from unet_keras.train import compile_model

    config = UNetConfig(**TINY, boundary_weight=2.0)
    model = build_unet(config)
    compile_model(model, config, steps_per_epoch=1)
    assert model.loss.boundary_weight == 2.0
    with pytest.raises(ConfigError, match=r"boundary_weight=-1.0 \(expected >= 0"):
        UNetConfig(boundary_weight=-1.0)
    # A config written before the setting existed was trained without it.
    assert UNetConfig.from_dict({}).boundary_weight == 0.0


def test_weight_decay_shrinks_the_kernels_only():
    from unet_keras.train import compile_model

    config = UNetConfig(**TINY, weight_decay=0.5)
    model = build_unet(config)
    compile_model(model, config, steps_per_epoch=1)
    optimizer = model.optimizer
    optimizer.learning_rate.assign(0.1)
    variables = model.trainable_variables
    before = [keras.ops.convert_to_numpy(v) for v in variables]
    # Zero gradients leave Adam's own step at zero: what moves is the decay alone.
    optimizer.apply([np.zeros(v.shape, "float32") for v in variables], variables)
    names = set()
    for variable, old in zip(variables, before):
        names.add(variable.name)
        factor = 1.0 - 0.1 * 0.5 if variable.name == "kernel" else 1.0
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), old * factor, rtol=1e-6,
                                   err_msg=variable.path)
    assert {"kernel", "gamma", "beta", "bias"} <= names
    # Off by default (plain Adam, as every run before the setting), and never negative.
    assert UNetConfig().weight_decay == 0.0 and UNetConfig.from_dict({}).weight_decay == 0.0
    plain = build_unet(UNetConfig(**TINY))
    compile_model(plain, UNetConfig(**TINY), steps_per_epoch=1)
    assert plain.optimizer.weight_decay is None
    with pytest.raises(ConfigError, match=r"weight_decay=-0.1 \(expected >= 0"):
        UNetConfig(weight_decay=-0.1)


def _lovasz_reference(labels, logits):
    """Berman et al.'s binary Lovasz hinge, one flattened image at a time, in numpy."""
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    order = np.argsort(-errors, kind="stable")
    errors, labels = errors[order], labels[order]
    intersection = labels.sum() - np.cumsum(labels)
    union = labels.sum() + np.cumsum(1.0 - labels)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return float(np.dot(np.maximum(errors, 0.0), jaccard))


def test_lovasz_hinge_matches_the_published_algorithm():
    from unet_keras.losses import lovasz_hinge

    rng = np.random.default_rng(3)
    y_true = (rng.random((3, 12, 10, 2)) > 0.6).astype(np.float32)
    logits = rng.normal(scale=2.0, size=y_true.shape).astype(np.float32)
    want = [[_lovasz_reference(y_true[n, ..., c].ravel(), logits[n, ..., c].ravel())
             for c in range(2)] for n in range(3)]
    got = np.asarray(lovasz_hinge(y_true, logits, from_logits=True))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Probabilities are taken back to logits first; a mask of grey values counts from 0.5 up.
    probs = 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(np.asarray(lovasz_hinge(y_true * 0.8 + 0.1, probs)), want,
                               rtol=1e-4)
    # Every pixel on its side with a margin of at least 1: nothing to pay.
    confident = (2.0 * y_true - 1.0) * 1.5
    np.testing.assert_allclose(np.asarray(lovasz_hinge(y_true, confident, from_logits=True)), 0.0)
    # One pixel turned to the wrong side is paid for.
    wrong = confident.copy()
    wrong[0, 0, 0, 0] = -wrong[0, 0, 0, 0]
    assert float(np.asarray(lovasz_hinge(y_true, wrong, from_logits=True))[0, 0]) > 0.0


def test_lovasz_weight_adds_the_hinge_to_the_full_resolution_head_only():
    from unet_keras.losses import lovasz_hinge
    from unet_keras.train import compile_model

    rng = np.random.default_rng(4)
    y_true = np.zeros((2, 16, 16, 2), np.float32)
    y_true[:, 4:12, 3:11] = 1
    y_pred = rng.uniform(0.05, 0.95, y_true.shape).astype(np.float32)
    hinge = float(np.mean(np.asarray(lovasz_hinge(y_true, y_pred))))
    plain, lovasz = BCEDiceLoss(), BCEDiceLoss(lovasz_weight=0.5)
    assert float(lovasz(y_true, y_pred)) == pytest.approx(
        float(plain(y_true, y_pred)) + 0.5 * hinge, rel=1e-5)
    # With deep supervision, the second head's BCE-Dice counts and its hinge does not.
    heads = np.concatenate([y_pred, y_pred[:, ::-1]], axis=-1)
    plain, lovasz = BCEDiceLoss(head_weights=[1.0, 0.5]), BCEDiceLoss(head_weights=[1.0, 0.5],
                                                                      lovasz_weight=0.5)
    assert float(lovasz(y_true, heads)) == pytest.approx(
        float(plain(y_true, heads)) + 0.5 * hinge, rel=1e-5)
    # Training compiles it from the config; off by default and in older configs; never negative.
    config = UNetConfig(**TINY, lovasz_weight=1.5)
    model = build_unet(config)
    compile_model(model, config, steps_per_epoch=1)
    assert model.loss.lovasz_weight == 1.5
    assert UNetConfig().lovasz_weight == 0.0 and UNetConfig.from_dict({}).lovasz_weight == 0.0
    with pytest.raises(ConfigError, match=r"lovasz_weight=-1.0 \(expected >= 0"):
        UNetConfig(lovasz_weight=-1.0)


def test_loss_config_round_trip():
    loss = BCEDiceLoss(smooth=2.0, bce_weight=0.5, channel_weights=[1, 2], boundary_weight=2.0,
                       lovasz_weight=0.5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(clone, BCEDiceLoss)
    assert clone.get_config() == loss.get_config()


def _save_compiled(tmp_path, channels=2):
    config = UNetConfig(**TINY, out_channels=channels)
    model = build_unet(config)
    model.compile(optimizer="adam", loss=BCEDiceLoss(smooth=2.0))
    x = np.random.default_rng(1).random((3, 32, 48, 3), dtype=np.float32)
    model.fit(x, np.ones((3, 32, 48, channels), np.float32), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    return model, x


LOAD_AND_PREDICT = """
import numpy as np, keras
from unet_keras.model import load_model
model = load_model('model.keras', compile=True)
assert type(model.loss).__name__ == 'BCEDiceLoss', model.loss
assert model.loss.smooth == 2.0
np.save('y_{b}.npy', np.asarray(model.predict(np.load('x.npy'), verbose=0)))
print(keras.backend.backend())
"""


def test_keras_file_loads_on_tensorflow_with_equal_outputs(tmp_path):
    model, x = _save_compiled(tmp_path)
    expected = np.asarray(model.predict(x, verbose=0))
    done = run_python(LOAD_AND_PREDICT.format(b="tensorflow"), "tensorflow", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("tensorflow")
    np.testing.assert_allclose(np.load(tmp_path / "y_tensorflow.npy"), expected, atol=1e-5)


def test_keras_file_loads_on_torch_with_equal_outputs(tmp_path):
    pytest.importorskip("torch", reason="torch is in the 'bench' extra")
    model, x = _save_compiled(tmp_path, channels=1)
    expected = np.asarray(model.predict(x, verbose=0))
    done = run_python(LOAD_AND_PREDICT.format(b="torch"), "torch", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "y_torch.npy"), expected, atol=1e-5)


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match="missing.keras.*not found"):
        load_model(tmp_path / "missing.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(ModelLoadError, match="bad.keras.*not a loadable Keras model"):
        load_model(bad)


def test_dihedral_views_invert_exactly():
    from unet_keras.inference import dihedral

    batch = np.arange(2 * 4 * 6 * 1, dtype=np.float32).reshape(2, 4, 6, 1)
    views = [dihedral(batch, k) for k in range(8)]
    assert len({v.tobytes() + bytes(v.shape) for v in views}) == 8  # all distinct
    for k, view in enumerate(views):
        np.testing.assert_array_equal(dihedral(view, k, inverse=True), batch)


def test_tta_of_a_symmetric_model_equals_plain_prediction():
    from unet_keras.inference import predict_probabilities

    class MeanBrightness:  # a per-pixel model: equivariant to every flip and rotation
        def predict(self, x, batch_size=None, verbose=0):
            return x.mean(axis=-1, keepdims=True)

    images = [np.random.default_rng(0).integers(0, 256, (30, 44, 3), np.uint8)]
    plain = predict_probabilities(MeanBrightness(), images, 16)[0]
    tta = predict_probabilities(MeanBrightness(), images, 16, tta=True)[0]
    assert tta.shape == (30, 44, 1)
    np.testing.assert_allclose(tta, plain, atol=1e-6)


def test_dihedral_mean_of_a_coordinate_map_is_its_centre():
    """A runner that ignores the pixels and returns each pixel's column index: its 8 views,
    turned back, hold the column, the row and both mirrored, two each; on an n x n image their
    mean is (n - 1) / 2 everywhere."""
    from unet_keras.inference import dihedral_mean

    def columns(batch):
        n, h, w, _ = batch.shape
        return np.broadcast_to(np.arange(w, dtype=np.float32)[None, None, :, None], (n, h, w, 1))

    batch = np.zeros((2, 6, 6, 3), np.float32)
    np.testing.assert_allclose(dihedral_mean(columns, batch), np.full((2, 6, 6, 1), 2.5))
    np.testing.assert_array_equal(columns(batch)[0, 0, :, 0], np.arange(6))  # not constant alone


def test_deep_supervision_trains_heads_beside_the_unet_it_saves():
    from unet_keras.model import build_training_model
    from unet_keras.train import compile_model

    config = UNetConfig(**TINY, deep_supervision=1)
    assert config.head_weights() == pytest.approx([2 / 3, 1 / 3])
    assert UNetConfig(depth=4, deep_supervision=3).head_weights() == pytest.approx(
        [8 / 15, 4 / 15, 2 / 15, 1 / 15])
    training, model = build_training_model(config)
    # The U-Net inside is build_unet's; the head on level 1 (8 filters) adds a 1x1 conv.
    assert model.count_params() == build_unet(config).count_params()
    assert training.count_params() == model.count_params() + 8 * 2 + 2
    x = np.random.default_rng(0).random((2, 32, 48, 3), dtype=np.float32)
    heads = np.asarray(training.predict(x, verbose=0))
    assert heads.shape == (2, 32, 48, 4)
    np.testing.assert_allclose(heads[..., :2], model.predict(x, verbose=0), atol=1e-6)
    # Upsampled from 16 x 24: neighbouring pixels of the auxiliary head differ, but smoothly.
    assert 0 < np.abs(np.diff(heads[..., 2:], axis=1)).max() < 0.2
    compile_model(training, config, steps_per_epoch=1)
    assert training.loss.head_weights == pytest.approx([2 / 3, 1 / 3])
    compile_model(model, config, steps_per_epoch=1)  # the U-Net alone (fine-tuning): one head
    assert model.loss.head_weights is None
    # Off, or no level below the top: one model.
    for config in (UNetConfig(**TINY, deep_supervision=0), UNetConfig(depth=1, image_size=32)):
        training, model = build_training_model(config)
        assert training is model and config.head_weights() == [1.0]
    # More levels than there are: those there are (depth 2: one).
    assert UNetConfig(**TINY, deep_supervision=3).supervised_levels == 1
    with pytest.raises(ConfigError, match=r"deep_supervision=-1 \(expected >= 0"):
        UNetConfig(**TINY, deep_supervision=-1)
    # A config written before the setting existed was trained without heads; one that names it
    # keeps its own.
    assert UNetConfig.from_dict({}).deep_supervision == 0
    assert UNetConfig.from_dict({"deep_supervision": 3}).deep_supervision == 3


def test_deep_supervision_loss_is_the_weighted_sum_of_each_heads_loss():
    rng = np.random.default_rng(3)
    y = (rng.random((2, 16, 16, 2)) > 0.5).astype(np.float32)
    main, aux = (rng.uniform(0.01, 0.99, (2, 16, 16, 2)).astype(np.float32) for _ in range(2))
    single = BCEDiceLoss(channel_weights=[1.0, 2.0])
    both = BCEDiceLoss(channel_weights=[1.0, 2.0], head_weights=[0.75, 0.25])
    expected = 0.75 * float(single(y, main)) + 0.25 * float(single(y, aux))
    assert float(both(y, np.concatenate([main, aux], -1))) == pytest.approx(expected, rel=1e-5)
    assert float(both(y, np.concatenate([main, main], -1))) == pytest.approx(float(single(y, main)),
                                                                           rel=1e-5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(both))
    assert clone.head_weights == [0.75, 0.25]
