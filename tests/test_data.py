import numpy as np
import pytest
from PIL import Image

from unet_keras.config import ConfigError, UNetConfig
from unet_keras.data.loading import load_fold
from unet_keras.data.splits import (all_data_indices, fold_indices, holdout_indices,
                                    select_indices)
from unet_keras.data.tfds_builder import load_examples
from unet_keras.data.zheng2018 import DataError, scan_pairs


def write_dataset(root, n=4, size=40, folder="Dataset 1", grey_edges=False):
    """A tiny dataset in the public layout; masks 0/128/255, optionally with anti-aliased greys."""
    (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[5:30, 5:30] = 128
        mask[10:20, 10:20] = 255
        if grey_edges:
            mask[5, 5:30] = 64     # nearer 0 (64 is 64 from 0 and 64 from 128: ties go down)
            mask[29, 5:30] = 90    # nearer 128
            mask[9, 10:20] = 200   # nearer 255
            mask[20, 10:20] = 170  # nearer 128
        Image.fromarray(image).save(root / folder / f"{i:03d}.bmp")
        Image.fromarray(mask).save(root / folder / f"{i:03d}.png")
    number = folder.split()[-1]
    header = "image ID,class label" if number == "1" else "image ID,class"
    lines = [header] + [f"{i},{(i % 5) + 1}" for i in range(1, n + 1)]
    (root / f"Class Labels of Dataset {number}.csv").write_text("\n".join(lines) + "\n")


def test_builder_reads_all_of_dataset1(real_data_dir):
    examples = load_examples(real_data_dir, "dataset1")
    assert len(examples) == 300
    assert [e["image_id"] for e in examples[:3]] == ["001", "002", "003"]
    sizes = set()
    for e in examples:
        # Most images are 120x120; 76 are cropped smaller (88..120 px a side) in the source.
        assert e["image"].dtype == np.uint8 and e["image"].shape[2] == 3
        assert e["mask"].shape == e["image"].shape[:2]
        sizes.add(e["image"].shape[:2])
    assert max(max(s) for s in sizes) == 120 and min(min(s) for s in sizes) == 88
    assert sum(e["image"].shape[:2] == (120, 120) for e in examples) == 224
    values = np.unique(np.concatenate([np.unique(e["mask"]) for e in examples]))
    assert values.tolist() == [0, 1, 2]
    # The expert masks against the files themselves: value 255 (nucleus) -> 2, 128 -> 1.
    raw = np.array(Image.open(real_data_dir / "Dataset 1" / "001.png"))
    np.testing.assert_array_equal(examples[0]["mask"], (raw == 128) * 1 + (raw == 255) * 2)
    labels = [e["label"] for e in examples]
    assert labels.count(0) == 176 and labels.count(4) == 1  # neutrophils, one basophil


def test_dataset2_grey_values_map_to_nearest_class(tmp_path):
    write_dataset(tmp_path, n=3, size=60, folder="Dataset 2", grey_edges=True)
    examples = load_examples(tmp_path, "dataset2")
    assert len(examples) == 3
    mask = examples[0]["mask"]
    assert mask[5, 12] == 0      # 64 -> 0
    assert mask[29, 12] == 1     # 90 -> 128 -> cytoplasm
    assert mask[9, 12] == 2      # 200 -> 255 -> nucleus
    assert mask[20, 12] == 1     # 170 -> 128
    assert mask[15, 15] == 2 and mask[25, 25] == 1 and mask[0, 0] == 0
    assert examples[1]["label"] == 2  # image 2 -> class 3 -> index 2


def test_cache_is_rebuilt_when_data_change(tmp_path):
    write_dataset(tmp_path, n=3)
    assert len(load_examples(tmp_path, "dataset1")) == 3
    (tmp_path / "Dataset 1" / "003.bmp").unlink()
    (tmp_path / "Dataset 1" / "003.png").unlink()
    assert len(load_examples(tmp_path, "dataset1")) == 2


def test_cache_follows_contents_not_file_sizes_and_times(tmp_path):
    """Two images of one size swapped under the same times (a rename, an unpacked archive),
    and a copy of the data elsewhere: each read from its own files, not the first cache."""
    import os
    import shutil

    first = tmp_path / "a"
    write_dataset(first, n=3)
    for path in (first / "Dataset 1").iterdir():
        os.utime(path, ns=(1, 1))
    before = {e["image_id"]: e["image"] for e in load_examples(first, "dataset1")}
    second = tmp_path / "b"
    shutil.copytree(first, second)  # copytree keeps the times
    folder = second / "Dataset 1"
    (folder / "001.bmp").rename(folder / "swap.bmp")
    (folder / "002.bmp").rename(folder / "001.bmp")
    (folder / "swap.bmp").rename(folder / "002.bmp")
    after = {e["image_id"]: e["image"] for e in load_examples(second, "dataset1")}
    np.testing.assert_array_equal(after["001"], before["002"])
    np.testing.assert_array_equal(after["002"], before["001"])


@pytest.mark.parametrize("breakage, message", [
    ("no_folder", r"Dataset 1: folder not found"),
    ("missing_mask", r"002\.bmp: no mask; expected 002\.png"),
    ("size_mismatch", r"003\.png: mask is 20x20 but image 003\.bmp is 40x40"),
    ("corrupt_image", r"001\.bmp: not a readable image"),
    ("empty_image", r"004\.bmp: file is empty"),
    ("class_zero", r"Class Labels of Dataset 1\.csv: line 3: class 0; expected rows 'image ID,class' "
                   r"with integers, classes 1\.\.5"),
    ("class_not_a_number", r"Class Labels of Dataset 1\.csv: expected rows .*invalid literal"),
])
def test_bad_layouts_name_the_file(tmp_path, breakage, message):
    write_dataset(tmp_path, n=4)
    folder = tmp_path / "Dataset 1"
    if breakage == "no_folder":
        folder.rename(tmp_path / "images")
    elif breakage == "missing_mask":
        (folder / "002.png").unlink()
    elif breakage == "size_mismatch":
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(folder / "003.png")
    elif breakage == "corrupt_image":
        (folder / "001.bmp").write_bytes(b"BM" + b"\x00" * 20)
    elif breakage == "empty_image":
        (folder / "004.bmp").write_bytes(b"")
    elif breakage.startswith("class_"):  # 0 would read as class index -1
        label = "0" if breakage == "class_zero" else "lymphocyte"
        (tmp_path / "Class Labels of Dataset 1.csv").write_text(
            f"image ID,class label\n1,2\n2,{label}\n")
    with pytest.raises(DataError, match=message):
        load_examples(tmp_path, "dataset1")


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="nowhere: data directory not found"):
        scan_pairs(tmp_path / "nowhere")


def test_folds_are_deterministic_disjoint_and_cover_everything():
    ids = [f"{i:03d}" for i in range(1, 301)]
    tests = []
    for fold in range(5):
        parts = fold_indices(ids, fold)
        assert len(parts["test"]) == 60 and len(parts["val"]) == 24 and len(parts["train"]) == 216
        assert not set(parts["test"]) & (set(parts["train"]) | set(parts["val"]))
        assert set(parts["train"]) | set(parts["val"]) | set(parts["test"]) == set(range(300))
        tests.extend(parts["test"])
        # Order of reading does not change the folds.
        shuffled = list(reversed(ids))
        same = fold_indices(shuffled, fold)
        assert sorted(shuffled[i] for i in same["test"]) == sorted(ids[i] for i in parts["test"])
    assert sorted(tests) == list(range(300))


def test_held_out_ids_are_the_test_part_and_validation_comes_from_the_rest():
    ids = [f"{i:03d}" for i in range(1, 301)]
    parts = holdout_indices(ids, "201-300")
    assert [ids[i] for i in parts["test"]] == ids[200:]
    assert len(parts["val"]) == 20 and len(parts["train"]) == 180
    assert set(parts["train"]) | set(parts["val"]) == set(range(200))
    assert not set(parts["train"]) & set(parts["val"])
    # Single ids match as numbers, and reading order does not change the parts.
    mixed = holdout_indices(list(reversed(ids)), "7, 1-3,300")
    assert sorted(ids[::-1][i] for i in mixed["test"]) == ["001", "002", "003", "007", "300"]
    assert holdout_indices(ids, "250-260", seed=1)["val"] != parts["val"]


def test_all_data_trains_on_every_image_but_the_validation_part():
    ids = [f"{i:03d}" for i in range(1, 301)]
    parts = all_data_indices(ids)
    assert parts["test"] == [] and len(parts["val"]) == 30 and len(parts["train"]) == 270
    assert sorted(parts["train"] + parts["val"]) == list(range(300))
    # Validation is the head of fold_indices' seeded order, whatever order the ids were read in.
    assert parts["val"] == fold_indices(ids, 0, val_fraction=0.0)["test"][:30]
    shuffled = list(reversed(ids))
    assert sorted(shuffled[i] for i in all_data_indices(shuffled)["val"]) == sorted(
        ids[i] for i in parts["val"])
    data = load_fold(UNetConfig(all_data=True), synthetic=True)
    assert (len(data.train), len(data.val), data.test) == (180, 20, [])
    assert UNetConfig(all_data=True).test_part.startswith("none")
    for split in (all_data_indices, lambda ids: fold_indices(ids, 0)):
        with pytest.raises(ValueError, match="duplicate image ids"):
            split(["1", "1"])


@pytest.mark.parametrize("spec, message", [
    ("5-2", "range '5-2'"), ("a-b", "name 0 of the 300"), ("1,,2", "empty item"), ("", "empty"),
    ("400-500", "name 0 of the 300"), ("1-300", "name 300 of the 300"),
    # A typo beside ids that do name images: refused, not ignored.
    ("201-300,999", "'999' names none of the 300 images"),
    ("1-5,400-500", "'400-500' names none of the 300 images"),
])
def test_held_out_ids_refuse_bad_or_empty_selections(spec, message):
    ids = [f"{i:03d}" for i in range(1, 301)]
    with pytest.raises(ValueError, match=message):
        holdout_indices(ids, spec)


def test_selected_images_are_all_or_those_named_in_id_order():
    ids = ["003", "001", "010", "002"]
    assert [ids[i] for i in select_indices(ids, "all")] == ["001", "002", "003", "010"]
    assert [ids[i] for i in select_indices(ids, " ALL ")] == ["001", "002", "003", "010"]
    assert [ids[i] for i in select_indices(ids, "10,1-2")] == ["001", "002", "010"]
    with pytest.raises(ValueError, match="name none of the 4 images"):
        select_indices(ids, "4-9")
    with pytest.raises(ValueError, match="empty item"):
        select_indices(ids, "1,")
    with pytest.raises(ValueError, match="'1-3-5' names none of the 4 images"):
        select_indices(ids, "10,1-3-5")


def test_a_train_fraction_keeps_part_of_the_training_images_nested_and_the_rest_unchanged():
    whole = load_fold(UNetConfig(fold=1), synthetic=True)
    parts = {f: load_fold(UNetConfig(fold=1, train_fraction=f), synthetic=True)
             for f in (0.25, 0.5, 0.75)}
    ids = {f: [e["image_id"] for e in data.train] for f, data in parts.items()}
    whole_ids = [e["image_id"] for e in whole.train]
    assert [len(ids[f]) for f in (0.25, 0.5, 0.75)] == [
        round(f * len(whole_ids)) for f in (0.25, 0.5, 0.75)]
    # Drawn from the whole training part in its order, each fraction inside the next.
    assert set(ids[0.25]) < set(ids[0.5]) < set(ids[0.75]) < set(whole_ids)
    assert ids[0.5] == [i for i in whole_ids if i in set(ids[0.5])]
    assert ids[0.5] != whole_ids[:len(ids[0.5])]  # a draw, not the first half
    for data in parts.values():  # validation and test as they were
        assert [e["image_id"] for e in data.val] == [e["image_id"] for e in whole.val]
        assert [e["image_id"] for e in data.test] == [e["image_id"] for e in whole.test]
    # Another fold draws its own; a tiny fraction keeps one image.
    other = load_fold(UNetConfig(fold=2, train_fraction=0.5), synthetic=True)
    assert len(load_fold(UNetConfig(train_fraction=1e-6), synthetic=True).train) == 1
    assert [e["image_id"] for e in other.train] != ids[0.5]
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=f"train_fraction={bad} \\(expected 0 < F <= 1"):
            UNetConfig(train_fraction=bad)


def test_a_config_with_bad_test_ids_is_refused_and_load_fold_names_the_data():
    with pytest.raises(ConfigError, match="range '9-1'"):
        UNetConfig(test_ids="9-1")
    with pytest.raises(DataError, match="SYNTHETIC.*name 0 of the 200"):
        load_fold(UNetConfig(test_ids="5000-6000"), synthetic=True)
    config = UNetConfig(test_ids="synthetic-0003, synthetic-0007")
    data = load_fold(config, synthetic=True)
    assert [e["image_id"] for e in data.test] == ["synthetic-0003", "synthetic-0007"]
    assert config.test_part == "images synthetic-0003, synthetic-0007"


def test_synthetic_fallback_is_labelled():
    data = load_fold(UNetConfig(), synthetic=True)
    assert data.synthetic and "SYNTHETIC" in data.source
    assert len(data.train) + len(data.val) + len(data.test) == 200


def test_two_processes_preparing_one_cache_both_load(tmp_path):
    """TFDS prepares in a temporary folder and renames it; without the cache lock the second
    of two processes started together fails on the rename ("... already exists")."""
    import os
    import subprocess
    import sys

    write_dataset(tmp_path / "data", n=6)
    env = {**os.environ, "WBC_TFDS_DIR": str(tmp_path / "cache")}
    script = ("import sys; from unet_keras.data.tfds_builder import load_examples; "
              "print(len(load_examples(sys.argv[1], 'dataset1')))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "data")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err[-2000:]
        assert out.strip().splitlines()[-1] == "6"


def test_dataset2_without_data_is_refused_not_replaced_by_the_synthetic_set(monkeypatch):
    """The synthetic set imitates Dataset 1's crops; asked for Dataset 2 with no data found,
    loading says where the data should be instead of scoring generated images."""
    from unet_keras.config import UNetConfig
    from unet_keras.data import loading

    monkeypatch.setattr(loading, "default_data_dir", lambda: None)
    with pytest.raises(DataError, match=r"dataset2: no data directory found; expected --data-dir "
                                        r"\(or \$WBC_DATA_DIR\) naming the folder that holds "
                                        r"'Dataset 2/'"):
        loading.load_all(UNetConfig(dataset="dataset2"))
    assert loading.load_all(UNetConfig(dataset="dataset1"))[2]  # Dataset 1: the synthetic set
