"""Figures: draw the analyses' figure data with matplotlib, inline as PNG data URIs.

Every figure kind is one function of a JSON dict (as stored in report.json),
so ``auditclf report`` redraws them without the model.

Drawing touches no global matplotlib state: figures are ``Figure`` objects on
their own Agg canvas (pyplot is never imported, so the backend a notebook
user chose stays theirs), and the house style applies only inside
``matplotlib.rc_context`` while a figure is drawn.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from auditclf.catalog import ATTRIBUTION_FACTS
from auditclf.keys import CORRUPTION_GALLERY, explain_column, gallery_array

DPI = 110
LABEL_CHARS = 40  # class and group names are cut to this for display; JSON and CSV keep them
INK = "#1f2933"
ACCENT = "#2563eb"
WARN = "#dc2626"
OK = "#16a34a"
STYLE = {  # the house style, applied per figure through matplotlib.rc_context
    "font.size": 9,
    "axes.edgecolor": "#9aa5b1",
    "axes.labelcolor": INK,
    "xtick.color": INK,
    "ytick.color": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
}


def short_label(name) -> str:
    """A class or group name cut to :data:`LABEL_CHARS` characters plus "…" for display.

    A name is data, not layout: a 10,000-character class name would make
    matplotlib lay out a figure too large to allocate. (The templates cut names
    the same way with their ``label`` macro.)
    """
    text = str(name)
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS] + "…"


def _tick(name) -> str:
    """A name as matplotlib text: shortened, and ``$`` escaped so it is never mathtext."""
    return short_label(name).replace("$", r"\$")


def _styled(draw: Callable[[dict], str]) -> Callable[[dict], str]:
    """``draw`` with the house style applied while it runs, and only then."""

    @functools.wraps(draw)
    def styled(data: dict) -> str:
        with matplotlib.rc_context(STYLE):
            return draw(data)

    return styled


def _subplots(*args, **kwargs):
    """``plt.subplots`` without pyplot: a Figure on its own Agg canvas, and its axes."""
    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*args, **kwargs)


def _legend_below(ax, **options) -> None:
    """The axes' legend under its tick labels and x label, where it covers no bar, line or
    label (``bbox_inches="tight"`` keeps it in the picture)."""
    renderer = ax.figure.canvas.get_renderer()
    below = ax.get_tightbbox(renderer).transformed(ax.transAxes.inverted()).y0
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, below - 0.02), frameon=False, **options)


def _to_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@_styled
def confusion(data: dict) -> str:
    labels = [_tick(name) for name in data["labels"]]
    counts = np.array(data["counts"])
    normalised = np.array(data["normalised"])
    k = len(labels)
    side = min(7.5, 1.6 + 0.42 * k)
    fig, ax = _subplots(figsize=(side + 1.0, side))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    dark = normalised[i, j] > 0.55
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else INK,
                    )
    ax.set_xticks(range(k), labels, rotation=90 if max(map(len, labels)) > 3 else 0)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (counts; colour = share of the true class)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of row")
    return _to_data_uri(fig)


@_styled
def reliability(data: dict) -> str:
    edges = np.array(data["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    accuracy = np.array(data["accuracy"], dtype=float)
    confidence = np.array(data["confidence"], dtype=float)
    count = np.array(data["count"])
    filled = count > 0
    fig, ax = _subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="#9aa5b1", lw=1, label="perfect calibration")
    ax.bar(
        centres[filled],
        accuracy[filled],
        width=width * 0.92,
        color=ACCENT,
        alpha=0.85,
        label="accuracy in bin",
    )
    low = np.minimum(accuracy, confidence)[filled]
    gap = np.abs(confidence - accuracy)[filled]
    ax.bar(
        centres[filled],
        gap,
        bottom=low,
        width=width * 0.92,
        facecolor="none",
        edgecolor=WARN,
        hatch="///",
        lw=0.8,
        label="gap to mean confidence",
    )
    for x, y, n in zip(
        centres[filled], np.maximum(accuracy, confidence)[filled], count[filled], strict=True
    ):
        ax.text(
            x, min(y + 0.02, 1.02), str(n), ha="center", va="bottom", fontsize=6.5, color="#52606d"
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram (numbers: images per bin)")
    _legend_below(ax, ncols=2, fontsize=8)
    return _to_data_uri(fig)


@_styled
def confidence_histogram(data: dict) -> str:
    edges = np.array(data["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    correct, wrong = np.array(data["correct"]), np.array(data["wrong"])
    fig, ax = _subplots(figsize=(4.6, 4.2))
    ax.bar(centres, correct, width=width * 0.92, color=OK, alpha=0.8, label="correct")
    ax.bar(
        centres, wrong, bottom=correct, width=width * 0.92, color=WARN, alpha=0.85, label="wrong"
    )
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("test images (log scale above 10)")
    ax.set_title("Confidence histogram")
    _legend_below(ax, ncols=2)
    return _to_data_uri(fig)


@_styled
def class_distribution(data: dict) -> str:
    classes = [_tick(name) for name in data["classes"]]
    splits = data["splits"]
    x = np.arange(len(classes))
    fig, ax = _subplots(figsize=(min(9, 2 + 0.5 * len(classes)), 3.2))
    bottom = np.zeros(len(classes))
    for (name, counts), colour in zip(
        splits.items(), ("#1e40af", "#60a5fa", "#f59e0b"), strict=True
    ):
        ax.bar(x, counts, bottom=bottom, color=colour, label=name, width=0.7)
        bottom += np.array(counts)
    ax.set_xticks(x, classes, rotation=90 if max(map(len, classes)) > 3 else 0)
    ax.set_ylabel("images")
    ax.set_title("Images per class and split")
    _legend_below(ax, ncols=3)
    return _to_data_uri(fig)


@_styled
def training_curves(data: dict) -> str:
    epochs = [e["epoch"] for e in data["epochs"]]
    fig, (loss_ax, acc_ax) = _subplots(1, 2, figsize=(8.4, 3.0))
    loss_ax.plot(epochs, [e["train_loss"] for e in data["epochs"]], marker="o", label="train")
    loss_ax.plot(epochs, [e["val_loss"] for e in data["epochs"]], marker="o", label="val")
    acc_ax.plot(epochs, [e["train_accuracy"] for e in data["epochs"]], marker="o", label="train")
    acc_ax.plot(epochs, [e["val_accuracy"] for e in data["epochs"]], marker="o", label="val")
    for ax, title in ((loss_ax, "cross-entropy loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.axvline(data["best_epoch"], color="#9aa5b1", ls=":", lw=1)
        _legend_below(ax, ncols=2)
    return _to_data_uri(fig)


@_styled
def robustness_curves(data: dict) -> str:
    norms = sorted(set(data["norms"].values()), key=["linf", "l2"].index)
    fig, axes = _subplots(1, len(norms), figsize=(4.8 * len(norms), 3.8), squeeze=False)
    for ax, norm in zip(axes[0], norms, strict=True):
        for attack, points in data["curves"].items():
            if data["norms"][attack] != norm:
                continue
            points = np.array(points, dtype=float)
            worst = attack.startswith("worst")
            dense = attack in data.get("steps", [])  # the bisection's: a step line, no markers
            ax.plot(
                points[:, 0],
                points[:, 1],
                marker=None if dense else "o",
                drawstyle="steps-post" if dense else "default",
                lw=2.4 if worst else 1.4,
                color=INK if worst else None,
                ls="--" if worst else ":" if dense else "-",
                label=attack,
            )
            ax.fill_between(
                points[:, 0],
                points[:, 2],
                points[:, 3],
                alpha=0.12,
                color=INK if worst else None,
                step="post" if dense else None,
            )
        ax.axhline(data["clean"], color=OK, lw=1, ls=":", label="clean")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"eps ({'L∞' if norm == 'linf' else 'L2'}, [0, 1] pixel units)")
        ax.set_ylabel("robust accuracy")
        ax.set_title(f"{'L∞' if norm == 'linf' else 'L2'} attacks (bands: 95% CI)")
        _legend_below(ax, ncols=3, fontsize=7.5)
    return _to_data_uri(fig)


MAX_GALLERY_ROWS = 6
GALLERY_IMAGES = ("clean", "adversarial", "perturbation")  # the attack gallery's, per item
TILE = 112  # pixels per side of a gallery tile
METHOD_NAMES = {method: facts.short_title for method, facts in ATTRIBUTION_FACTS.items()}


def _png_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    image = Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    image = image.resize((TILE, TILE), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _rgb(values) -> np.ndarray:
    picture = np.array(values, dtype=np.float64).transpose(1, 2, 0)
    return np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else picture


def _overlay_uri(values, heat) -> str:
    """The map in the RdBu_r colour map (÷ its max |value|) over the image in gray."""
    gray = _rgb(values).mean(2, keepdims=True)
    heat = np.array(heat, dtype=np.float64)
    scale = np.abs(heat).max() or 1.0
    colours = matplotlib.colormaps["RdBu_r"]((heat / scale + 1) / 2)[..., :3]
    return _png_uri(0.35 * gray + 0.65 * colours)


def _fmt(value, pct: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.0%}" if pct else f"{value:.2f}"


def _scores(entry: dict) -> list[str]:
    lines = [
        f"del {entry['deletion_auc']:.2f} · rand {entry['random_deletion_auc']:.2f}",
        f"ins {entry['insertion_auc']:.2f} · rand {entry['random_insertion_auc']:.2f}",
        f"rand-model ρ {_fmt(entry.get('randomization_correlation'))}",
        f"noise ρ {_fmt(entry.get('noise_rank_correlation'))}",
    ]
    if entry.get("mask_mass") is not None:
        lines.append(f"on object {_fmt(entry['mask_mass'], pct=True)}")
    return lines


MISSING_ARTIFACTS = (
    "The images are not shown: artifacts.npz, the report's image file, is not in its "
    "folder (a report of an older auditclf, or the file was removed)."
)


def _adversarial_tiles(data: dict, image: dict, maps: dict, arrays: dict) -> dict | None:
    """The adversarial version of one explained image and its maps, when attacks ran."""
    picture = arrays.get(explain_column("adversarial_image"))
    if data.get("adversarial_eps") is None or picture is None or "adversarial_pred" not in image:
        return None
    tiles = []
    for method in data["methods"]:
        entry = maps.get((image["sample_id"], method))
        heat = arrays.get(explain_column("adversarial_map", method))
        if entry is not None and heat is not None:
            tiles.append(
                {
                    "method": METHOD_NAMES.get(method, method),
                    "uri": _overlay_uri(picture[image["index"]], heat[image["index"]]),
                    "scores": [
                        f"vs clean ρ {_fmt(entry.get('adversarial_rank_correlation'))}",
                        f"top-k overlap {_fmt(entry.get('adversarial_topk_overlap'))}",
                    ],
                }
            )
    return {
        "eps": data["adversarial_eps"],
        "pred": data["classes"][image["adversarial_pred"]],
        "image": _png_uri(_rgb(picture[image["index"]])),
        "maps": tiles,
    }


def attribution_gallery(data: dict, arrays: dict) -> dict:
    """One class's gallery as HTML-ready rows (not a matplotlib figure: tiles are PNGs
    drawn with a colour map directly, scores stay text). Per explained image: the image,
    each method's map over it with its scores, and when attacks ran the adversarial image
    with its maps and their agreement with the clean ones. The pixels come from
    ``arrays`` (the artifact file's, row ``index`` of each); without them the gallery
    says so (``missing``)."""
    methods = [METHOD_NAMES.get(m, m) for m in data["methods"]]
    pictures = arrays.get(explain_column("image"))
    if pictures is None:
        return {"rows": [], "methods": methods, "missing": MISSING_ARTIFACTS}
    classes = data["classes"]
    maps = {(m["sample_id"], m["method"]): m for m in data["maps"]}
    rows = []
    for image in data["images"][:MAX_GALLERY_ROWS]:
        picture = pictures[image["index"]]
        row = {
            "id": image["sample_id"],
            "label": classes[image["label"]],
            "pred": classes[image["pred"]],
            "swap": image["swap_flip_rate"],
            "image": _png_uri(_rgb(picture)),
            "maps": [],
            "adversarial": _adversarial_tiles(data, image, maps, arrays),
        }
        for method in data["methods"]:
            entry = maps.get((image["sample_id"], method))
            heat = arrays.get(explain_column("map", method))
            if entry is not None and heat is not None:
                row["maps"].append(
                    {
                        "method": METHOD_NAMES.get(method, method),
                        "uri": _overlay_uri(picture, heat[image["index"]]),
                        "scores": _scores(entry),
                    }
                )
        rows.append(row)
    return {"rows": rows, "methods": methods, "missing": None}


def attack_gallery(gallery: dict | None, arrays: dict) -> dict | None:
    """The attack probe's gallery with its images as PNG data URIs (upscaled for small
    images); None when it made none, ``missing`` set when its images are not at hand."""
    if not gallery or not gallery.get("items"):
        return None
    images = {what: arrays.get(gallery_array(what)) for what in GALLERY_IMAGES}
    if any(found is None for found in images.values()):
        return {**gallery, "items": [], "missing": MISSING_ARTIFACTS}
    items = [
        {**item, **{what: _tile_uri(images[what][i]) for what in GALLERY_IMAGES}}
        for i, item in enumerate(gallery["items"])
    ]
    return {**gallery, "items": items, "missing": None}


def _tile_uri(image: np.ndarray) -> str:
    """(C, H, W) floats in [0, 1] → a PNG data URI, upscaled to about 96 px."""
    from PIL import Image

    array = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    picture = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    scale = max(1, 96 // max(picture.size))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@_styled
def fairness_bars(data: dict) -> str:
    """Accuracy per group with its interval, the overall accuracy as a line, the worst
    group in red (every group, when several tie for the lowest); groups below the minimum
    size are drawn empty and labelled."""
    groups = [_tick(g) for g in data["groups"]]
    fig, ax = _subplots(figsize=(max(4.2, 0.75 * len(groups) + 1.5), 2.9))
    worst = data.get("worst")  # the groups tied at the lowest (one index in older reports)
    lowest = worst if isinstance(worst, list) else [worst]
    for i, (value, ci, size) in enumerate(
        zip(data["values"], data["ci"], data["sizes"], strict=True)
    ):
        if not isinstance(value, int | float):
            ax.text(i, 0.02, f"n={size}\ninsufficient\ndata", ha="center", va="bottom", fontsize=7)
            continue
        colour = WARN if i in lowest else ACCENT
        ax.bar(i, value, color=colour, alpha=0.85, width=0.65)
        if ci:
            ax.errorbar(i, value, yerr=[[value - ci[0]], [ci[1] - value]], color=INK, capsize=3)
        ax.text(i, 0.02, f"n={size}", ha="center", va="bottom", fontsize=7, color="white")
    if data.get("overall") is not None:
        ax.axhline(data["overall"], color=INK, linestyle="--", linewidth=1, label="overall")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(
        groups, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center"
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{_tick(data['attribute'])}: accuracy per group ({data['level']:.0%} CI)")
    if data.get("overall") is not None:
        _legend_below(ax, fontsize=7.5)
    return _to_data_uri(fig)


@_styled
def corruption_heatmap(data: dict) -> str:
    """Accuracy per corruption (rows, most damaging first) and severity (columns), each cell
    annotated, with the clean accuracy of the same images as the first column."""
    accuracy = np.array(
        [[np.nan if v is None else v for v in row] for row in data["accuracy"]], dtype=float
    )
    order = np.argsort(np.nanmean(accuracy, axis=1), kind="stable")
    names = [_tick(data["names"][i]) for i in order]
    cells = np.column_stack([np.full(len(order), data["clean"]), accuracy[order]])
    columns = ["clean", *(str(s) for s in data["severities"])]
    fig, ax = _subplots(figsize=(1.0 + 0.62 * len(columns), 0.8 + 0.3 * len(names)))
    ax.imshow(cells, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(cells):
        if np.isfinite(value):
            ink = "white" if value < 0.25 or value > 0.85 else INK
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=7, color=ink)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_xlabel("severity")
    ax.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.axvline(0.5, color="white", lw=2)
    ax.set_title("Accuracy under each corruption", fontsize=9)
    return _to_data_uri(fig)


def corruption_gallery(gallery: dict | None, arrays: dict, classes: list[str]) -> dict | None:
    """The corruption probe's gallery: per corruption, the clean image and its severities
    1, 3, 5 as PNG data URIs with the model's answers; None when it made none, ``missing``
    set when its images are not at hand."""
    if not gallery:
        return None
    gallery = {**gallery, "label_name": classes[gallery["label"]]}
    images = arrays.get(CORRUPTION_GALLERY)
    if images is None:
        return {**gallery, "rows": [], "missing": MISSING_ARTIFACTS}
    rows = []
    for c, name in enumerate(gallery["names"]):
        clean = {
            "uri": _tile_uri(images[c, 0]),
            "title": "clean",
            "answer": f"→ {short_label(classes[gallery['clean_pred']])}",
            "wrong": gallery["clean_pred"] != gallery["label"],
        }
        tiles = [clean]
        for k, severity in enumerate(gallery["severities"]):
            pred = gallery["pred"][c][k]
            tiles.append(
                {
                    "uri": _tile_uri(images[c, k + 1]),
                    "title": f"severity {severity}",
                    "answer": f"→ {short_label(classes[pred])} ({gallery['confidence'][c][k]:.0%})",
                    "wrong": pred != gallery["label"],
                }
            )
        rows.append({"name": name, "tiles": tiles})
    return {**gallery, "rows": rows, "missing": None}


FIGURES: dict[str, Callable[[dict], str]] = {
    "corruption_heatmap": corruption_heatmap,
    "confusion": confusion,
    "reliability": reliability,
    "confidence_histogram": confidence_histogram,
    "class_distribution": class_distribution,
    "training_curves": training_curves,
    "robustness_curves": robustness_curves,
    "fairness_bars": fairness_bars,
}


FIGURE_TITLES = {
    "corruption_heatmap": "Accuracy under each corruption and severity, clean first",
    "fairness_bars": "Accuracy per group with intervals and the overall accuracy",
    "attribution_gallery": "Attribution maps per method over each explained image, with scores",
    "robustness_curves": "Robust accuracy against eps for every attack",
    "confusion": "Confusion matrix: true class by row, predicted class by column",
    "reliability": "Reliability diagram: accuracy against confidence per bin",
    "confidence_histogram": "Confidence histogram of correct and wrong predictions",
    "class_distribution": "Images per class and split",
    "training_curves": "Training and validation loss and accuracy per epoch",
}


def render_figure(data: dict, arrays: dict) -> str | dict:
    """A PNG data URI for one figure dict (its ``kind`` picks the drawing); the attribution
    galleries are HTML-ready rows drawn from the model's ``arrays``."""
    if data["kind"] == "attribution_gallery":
        return attribution_gallery(data, arrays)
    return FIGURES[data["kind"]](data)
