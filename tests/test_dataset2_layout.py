"""benchmarks.dataset2_layout: a run's test images, enlarged, read back as Dataset 2."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks.dataset2_layout import main, write_layout
from unet_keras.data.tfds_builder import load_examples


def _examples() -> list[dict]:
    rng = np.random.default_rng(3)
    out = []
    for k, label in ((1, 0), (2, 4)):
        mask = np.zeros((40, 48), np.uint8)
        mask[8:32, 10:40] = 1
        mask[14:26, 18:30] = 2
        image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        out.append({"image": image, "mask": mask, "label": label, "image_id": f"{k:03d}"})
    return out


def test_enlarged_layout_reads_back_as_dataset2_with_grey_edges(tmp_path):
    out = tmp_path / "d2"
    assert write_layout(_examples(), 2.5, out) == 2
    raw = np.asarray(Image.open(out / "Dataset 2" / "001.png"))
    assert raw.shape == (100, 120) and len(np.unique(raw)) > 3  # anti-aliased greys at edges
    read = load_examples(out, "dataset2")
    assert [e["image_id"] for e in read] == ["001", "002"]
    assert [e["label"] for e in read] == [0, 4]
    mask = read[0]["mask"]
    assert mask.shape == (100, 120) and set(np.unique(mask)) == {0, 1, 2}
    # Interiors keep their class; the whole cell's area scales by 2.5**2 up to its edge.
    assert mask[50, 60] == 2 and mask[25, 30] == 1 and mask[5, 5] == 0
    assert (mask > 0).sum() == pytest.approx(24 * 30 * 2.5**2, rel=0.05)


def test_refuses_an_existing_or_in_project_directory(tmp_path, capsys):
    (tmp_path / "there").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        write_layout(_examples(), 2.0, tmp_path / "there")
    with pytest.raises(ValueError, match="--zoom 9"):
        write_layout(_examples(), 9, tmp_path / "new")
    assert not (tmp_path / "new").exists() and len(list(tmp_path.iterdir())) == 1
    assert main(["runs/none", "--out", "benchmarks/results/d2"]) == 1
    assert "inside the project" in capsys.readouterr().err
