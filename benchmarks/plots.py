"""PNG figures of a run (matplotlib, Agg): latency vs size, throughput vs batch, training, accuracy."""

from __future__ import annotations

from pathlib import Path

from benchmarks import summary


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _lines(ax, tables: dict[str, dict], x_label: str, value: str, low: str, high: str) -> None:
    names = sorted({n for rows in tables.values() for n, r in rows.items() if not r.get("reference")})
    xs = sorted(tables, key=int)
    for name in names:
        pts = [(int(x), tables[x][name]) for x in xs if name in tables[x]]
        if not pts:
            continue
        x = [p[0] for p in pts]
        y = [p[1][value] for p in pts]
        err = [[p[1][value] - p[1][low] for p in pts], [p[1][high] - p[1][value] for p in pts]]
        style = "--" if name.startswith(("torch", "keras")) else "-"
        ax.errorbar(x, y, yerr=err, marker="o", linestyle=style, capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(x) for x in xs], [str(x) for x in xs])
    ax.set_xlabel(x_label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def latency_plot(res: dict, path: Path, key: str = "latency") -> Path | None:
    tables = summary.latency_tables(res, key)
    if not tables:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    _lines(ax, tables, "image side (px), batch 1", "median_ms", "p10_ms", "p90_ms")
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (median, p10-p90)")
    ax.set_title("Batch-1 latency vs image size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput_plot(res: dict, path: Path, key: str = "throughput") -> Path | None:
    tables = summary.throughput_tables(res, key)
    if not tables:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    _lines(ax, tables, "batch size", "images_per_s", "images_per_s_p10", "images_per_s_p90")
    size = res[key]["size"]
    ax.set_ylabel("images/s (median, p10-p90)")
    ax.set_title(f"Throughput vs batch at {size}x{size}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(res: dict, path: Path, values: dict[str, float], label: str, title: str,
          log: bool = False, zoom: bool = False) -> Path | None:
    if not values:
        return None
    plt = _pyplot()
    names = list(values)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(values[n], i, f" {values[n]:.4g}", va="center", fontsize=8)
    if log:
        ax.set_xscale("log")
    if zoom:  # Dice values differ in the third decimal: do not start the axis at 0
        low = min(values.values())
        ax.set_xlim(max(0.0, low - 0.02), min(1.0, max(values.values()) + 0.01))
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_plot(res: dict, path: Path) -> Path | None:
    acc = res.get("accuracy", {})
    rows = acc.get("runtimes", {})
    if acc.get("status") == "scored":
        values = {n: r["whole_cell_dice"] for n, r in rows.items() if "whole_cell_dice" in r}
        return _bars(res, path, values, "whole-cell Dice (test fold, mean per image)",
                     "Accuracy per runtime", zoom=True)
    values = {n: max(r.get("max_abs_diff_vs_keras_jax", 0), 1e-9) for n, r in rows.items()}
    return _bars(res, path, values, "max |probability - Keras-JAX| on the test images",
                 f"Agreement per runtime (Dice {acc.get('status', 'n/a')})", log=True)


def training_plot(res: dict, path: Path, key: str = "training") -> Path | None:
    rows = summary.training_table(res, key)
    setup = res.get(f"{key}_setup", {})
    return _bars(res, path, {n: r["images_per_s"] for n, r in rows.items()}, "images/s (median)",
                 f"Training throughput, {setup.get('size')}px, batch {setup.get('batch')}")


def write_all(res: dict, out: Path) -> dict[str, str]:
    """Write every figure that has data; returns {figure: file name}."""
    made = {}
    for name, fn in (("latency", lambda p: latency_plot(res, p)),
                     ("throughput", lambda p: throughput_plot(res, p)),
                     ("training", lambda p: training_plot(res, p)),
                     ("accuracy", lambda p: accuracy_plot(res, p)),
                     ("latency_gpu", lambda p: latency_plot(res, p, "latency_gpu")),
                     ("throughput_gpu", lambda p: throughput_plot(res, p, "throughput_gpu")),
                     ("training_gpu", lambda p: training_plot(res, p, "training_gpu"))):
        path = fn(out / f"{name}.png")
        if path is not None:
            made[name] = path.name
    return made
