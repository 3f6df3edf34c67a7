"""benchmarks.robustness_folds on hand-made fold reports: paired means worked out by hand."""

import json

import pytest

from benchmarks.robustness_folds import main


def write_fold(root, k, plain, mapped_dice, mapped):
    report = {"data_source": "test data", "conditions": [{"name": "identity"}],
              "models": {
                  "default": {"scores": {"identity": {"whole_cell_dice": plain}},
                              "shifted_means": {"stain": {"whole_cell_dice": plain}}},
                  "default, colour auto": {
                      "scores": {"identity": {"whole_cell_dice": mapped_dice}},
                      "shifted_means": {"stain": {"whole_cell_dice": mapped_dice}},
                      "colour": {"mapped": {"identity": mapped}}}}}
    (root / f"fold-{k}").mkdir(parents=True)
    (root / f"fold-{k}" / "robustness.json").write_text(json.dumps(report))


def test_folds_are_paired_and_mapped_images_summed(tmp_path, capsys):
    # Differences +0.02 and +0.04: mean 0.03, sd sqrt(2 * 0.01**2) = 0.0141.
    write_fold(tmp_path, 0, 0.90, 0.92, [True, False])
    write_fold(tmp_path, 1, 0.80, 0.84, [True, True, False])
    assert main([str(tmp_path)]) == 0
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "| identity | 0.8500 | 0.8800 | +0.0300 ± 0.0141 | - | - | - | 3/5 |" in summary
    assert "| **mean, stain** | 0.8500 | 0.8800 | +0.0300 ± 0.0141 |" in summary


def test_a_fold_without_the_variant_is_refused(tmp_path, capsys):
    write_fold(tmp_path, 0, 0.9, 0.9, [False])
    write_fold(tmp_path, 1, 0.9, 0.9, [False])
    report = json.loads((tmp_path / "fold-1" / "robustness.json").read_text())
    del report["models"]["default, colour auto"]
    (tmp_path / "fold-1" / "robustness.json").write_text(json.dumps(report))
    assert main([str(tmp_path)]) == 1
    assert "fold-1/robustness.json: no ['default, colour auto']" in capsys.readouterr().err
    assert not (tmp_path / "SUMMARY.md").exists()


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_folds_are_refused(tmp_path, capsys, n):
    for k in range(n):
        write_fold(tmp_path, k, 0.9, 0.9, [False])
    assert main([str(tmp_path)]) == 1 and "expected two or more" in capsys.readouterr().err
