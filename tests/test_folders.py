"""A user's own folder of images and masks: both mask kinds, and the refusal of whole-cell masks
read as cell-and-nucleus ones."""

import numpy as np
import pytest
from PIL import Image

from unet_keras.data.folders import load_folder, read_example
from unet_keras.data.zheng2018 import DataError
from unet_keras.evaluate import score_probabilities

CELL = (slice(8, 40), slice(8, 40))
NUCLEUS = (slice(16, 30), slice(16, 30))


def grey_mask() -> np.ndarray:
    """A 48 px cell (rows and columns 8-39) with its nucleus (16-29), grey 0/128/255."""
    mask = np.zeros((48, 48), np.uint8)
    mask[CELL] = 128
    mask[NUCLEUS] = 255
    return mask


def write_folder(root, masks: list[np.ndarray]):
    root.mkdir()
    for i, mask in enumerate(masks):
        Image.fromarray(np.full((48, 48, 3), 200, np.uint8)).save(root / f"cell_{i}.png")
        Image.fromarray(mask).save(root / f"cell_{i}_mask.png")
    return root


@pytest.mark.parametrize("cell_value", [255, 1])
def test_whole_cell_masks_read_as_cells_whose_nucleus_is_not_annotated(tmp_path, cell_value):
    cell = np.where(grey_mask() > 0, cell_value, 0).astype(np.uint8)
    cell[8, 8:40] = cell_value // 3  # an anti-aliased edge below half the cell value: background
    folder = write_folder(tmp_path / "mine", [cell])
    example = read_example(folder / "cell_0.png", folder / "cell_0_mask.png", "cell")
    expected = np.zeros((48, 48), np.uint8)
    expected[CELL] = 1
    expected[8, 8:40] = 0
    np.testing.assert_array_equal(example["mask"], expected)
    assert example["nucleus_annotated"] is False
    # A cell-and-nucleus mask read as whole cells keeps its cytoplasm and nucleus as cell.
    Image.fromarray(grey_mask()).save(folder / "grey.png")
    grey = read_example(folder / "cell_0.png", folder / "grey.png", "cell")["mask"]
    assert set(np.unique(grey)) == {0, 1} and grey[CELL].all() and grey.sum() == 32 * 32


@pytest.mark.parametrize("cell_value, missing", [(255, "cytoplasm"), (1, "nucleus")])
def test_whole_cell_masks_are_refused_as_cell_and_nucleus_masks(tmp_path, cell_value, missing):
    """0/255 would read as all nucleus and 0/1 as all cytoplasm: nucleus scores silently wrong."""
    folder = write_folder(tmp_path / "mine", [np.where(grey_mask() > 0, cell_value, 0)
                                              .astype(np.uint8)] * 2)
    with pytest.raises(DataError, match=f"{folder}: no mask holds {missing}; .*--masks cell"):
        load_folder(folder)
    assert len(load_folder(folder, kind="cell")) == 2


def test_a_folder_needs_each_class_in_some_mask_not_in_every_one(tmp_path):
    no_nucleus = np.where(grey_mask() > 0, 128, 0).astype(np.uint8)
    examples = load_folder(write_folder(tmp_path / "mine", [grey_mask(), no_nucleus]))
    assert [e["nucleus_annotated"] for e in examples] == [True, True]
    with pytest.raises(ValueError, match="mask kind 'nuclei'"):
        read_example(tmp_path / "mine" / "cell_0.png", tmp_path / "mine" / "cell_0_mask.png",
                     "nuclei")


def test_whole_cell_masks_score_the_cell_alone_and_alike(tmp_path):
    """The same prediction scores the same whole-cell figures against either reading of a mask,
    and no nucleus figures against the whole-cell one."""
    folder = write_folder(tmp_path / "mine", [grey_mask()])
    pair = folder / "cell_0.png", folder / "cell_0_mask.png"
    prob = np.zeros((48, 48, 2), np.float32)
    prob[8:40, 8:36, 0] = 1.0  # 4 of the cell's 32 columns missed
    prob[16:30, 16:30, 1] = 1.0
    rows, summary = score_probabilities([prob] * 2, [read_example(*pair),
                                                     read_example(*pair, "cell")], (0.5, 0.5))
    assert rows[0]["whole_cell_dice"] == pytest.approx(2 * 28 / (28 + 32))
    assert rows[0]["nucleus_dice"] == 1.0 and "nucleus_dice" not in rows[1]
    assert rows[1] == {k: v for k, v in rows[0].items() if not k.startswith("nucleus")}
    assert summary["nucleus_dice"] == 1.0 and summary["n_images"] == 2


def test_label_map_masks_read_as_whole_cells_keep_their_cytoplasm(tmp_path):
    # 0/1/2 labels: the cell is every labelled pixel, not those above half the largest label.
    folder = write_folder(tmp_path / "mine", [np.minimum(grey_mask() // 127, 2).astype(np.uint8)])
    mask = read_example(folder / "cell_0.png", folder / "cell_0_mask.png", "cell")["mask"]
    assert mask.sum() == 32 * 32 and mask[CELL].all()


def test_the_publications_own_folder_reads_with_masks_beside_the_images(tmp_path):
    """001.bmp beside its mask 001.png, as in the Zheng et al. folders: the PNG is the mask."""
    folder = tmp_path / "Dataset 2"
    folder.mkdir()
    for stem in ("001", "002"):
        Image.fromarray(np.full((48, 48, 3), 200, np.uint8)).save(folder / f"{stem}.bmp")
        Image.fromarray(grey_mask()).save(folder / f"{stem}.png")
    examples = load_folder(folder)
    assert [e["image_id"] for e in examples] == ["001", "002"]
    assert all(e["image"].shape == (48, 48, 3) and e["mask"].max() == 2 for e in examples)
    # With the masks copied to a folder of their own, the PNGs beside the images are ambiguous.
    masks = tmp_path / "masks"
    masks.mkdir()
    for stem in ("001", "002"):
        Image.fromarray(grey_mask()).save(masks / f"{stem}.png")
    with pytest.raises(DataError, match=r"001\.png: a second image for '001' \(also 001\.bmp\)"):
        load_folder(folder, masks)
    (folder / "002.png").unlink()
    with pytest.raises(DataError, match=r"002\.bmp: no mask; expected .*002_mask\.png \(or "
                                        r"002\.png beside a non-PNG image\)"):
        load_folder(folder)
