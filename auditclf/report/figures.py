"""Figures: draw the analyses' figure data with matplotlib, inline as PNG data URIs.

Every figure kind is one function of a JSON dict (as stored in report.json),
so ``auditclf report`` redraws them without the model.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 110
INK = "#1f2933"
ACCENT = "#2563eb"
WARN = "#dc2626"
OK = "#16a34a"
plt.rcParams.update(
    {
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
)


def _to_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion(data: dict) -> str:
    labels = data["labels"]
    counts = np.array(data["counts"])
    normalised = np.array(data["normalised"])
    k = len(labels)
    side = min(7.5, 1.6 + 0.42 * k)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
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


def reliability(data: dict) -> str:
    edges = np.array(data["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    accuracy = np.array(data["accuracy"], dtype=float)
    confidence = np.array(data["confidence"], dtype=float)
    count = np.array(data["count"])
    filled = count > 0
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
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
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False, ncols=2, fontsize=8)
    return _to_data_uri(fig)


def confidence_histogram(data: dict) -> str:
    edges = np.array(data["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    correct, wrong = np.array(data["correct"]), np.array(data["wrong"])
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.bar(centres, correct, width=width * 0.92, color=OK, alpha=0.8, label="correct")
    ax.bar(
        centres, wrong, bottom=correct, width=width * 0.92, color=WARN, alpha=0.85, label="wrong"
    )
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("test images (log scale above 10)")
    ax.set_title("Confidence histogram")
    ax.legend(loc="upper left", frameon=False)
    return _to_data_uri(fig)


def class_distribution(data: dict) -> str:
    classes = data["classes"]
    splits = data["splits"]
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(min(9, 2 + 0.5 * len(classes)), 3.2))
    bottom = np.zeros(len(classes))
    for (name, counts), colour in zip(
        splits.items(), ("#1e40af", "#60a5fa", "#f59e0b"), strict=True
    ):
        ax.bar(x, counts, bottom=bottom, color=colour, label=name, width=0.7)
        bottom += np.array(counts)
    ax.set_xticks(x, classes, rotation=90 if max(map(len, classes)) > 3 else 0)
    ax.set_ylabel("images")
    ax.set_title("Images per class and split")
    ax.legend(frameon=False, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return _to_data_uri(fig)


def training_curves(data: dict) -> str:
    epochs = [e["epoch"] for e in data["epochs"]]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(8.4, 3.0))
    loss_ax.plot(epochs, [e["train_loss"] for e in data["epochs"]], marker="o", label="train")
    loss_ax.plot(epochs, [e["val_loss"] for e in data["epochs"]], marker="o", label="val")
    acc_ax.plot(epochs, [e["train_accuracy"] for e in data["epochs"]], marker="o", label="train")
    acc_ax.plot(epochs, [e["val_accuracy"] for e in data["epochs"]], marker="o", label="val")
    for ax, title in ((loss_ax, "cross-entropy loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.axvline(data["best_epoch"], color="#9aa5b1", ls=":", lw=1)
        ax.legend(frameon=False)
    return _to_data_uri(fig)


def robustness_curves(data: dict) -> str:
    norms = sorted(set(data["norms"].values()), key=["linf", "l2"].index)
    fig, axes = plt.subplots(1, len(norms), figsize=(4.8 * len(norms), 3.8), squeeze=False)
    for ax, norm in zip(axes[0], norms, strict=True):
        for attack, points in data["curves"].items():
            if data["norms"][attack] != norm:
                continue
            points = np.array(points, dtype=float)
            worst = attack.startswith("worst")
            ax.plot(
                points[:, 0],
                points[:, 1],
                marker="o",
                lw=2.4 if worst else 1.4,
                color=INK if worst else None,
                ls="--" if worst else "-",
                label=attack,
            )
            ax.fill_between(
                points[:, 0], points[:, 2], points[:, 3], alpha=0.12, color=INK if worst else None
            )
        ax.axhline(data["clean"], color=OK, lw=1, ls=":", label="clean")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"eps ({'L∞' if norm == 'linf' else 'L2'}, [0, 1] pixel units)")
        ax.set_ylabel("robust accuracy")
        ax.set_title(f"{'L∞' if norm == 'linf' else 'L2'} attacks (bands: 95% CI)")
        ax.legend(frameon=False, fontsize=7.5)
    return _to_data_uri(fig)


MAX_GALLERY_ROWS = 6
SHORT_NAMES = {"gradcam": "Grad-CAM", "integrated_gradients": "Integr. Gradients", "lime": "LIME"}


def _picture(values) -> tuple[np.ndarray, bool]:
    picture = np.array(values).transpose(1, 2, 0)
    return (picture[..., 0], True) if picture.shape[2] == 1 else (picture, False)


def _overlay(ax, picture: np.ndarray, heat) -> object:
    heat = np.array(heat)
    scale = np.abs(heat).max() or 1.0
    ax.imshow(picture if picture.ndim == 2 else picture.mean(2), cmap="gray", vmin=0, vmax=1)
    return ax.imshow(heat / scale, cmap="RdBu_r", vmin=-1, vmax=1, alpha=0.65)


def _scores(entry: dict) -> str:
    lines = [
        f"del {entry['deletion_auc']:.2f} (rand {entry['random_deletion_auc']:.2f})",
        f"ins {entry['insertion_auc']:.2f} (rand {entry['random_insertion_auc']:.2f})",
        f"rand-model ρ {_fmt(entry.get('randomization_correlation'))}",
        f"noise ρ {_fmt(entry.get('noise_rank_correlation'))}",
    ]
    if entry.get("mask_mass") is not None:
        lines.append(f"on object {_fmt(entry['mask_mass'], pct=True)}")
    return "\n".join(lines)


def _fmt(value, pct: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.0%}" if pct else f"{value:.2f}"


def attribution_gallery(data: dict) -> str:
    """One class: per explained image, the image and each method's map over it with the
    map's scores beneath; when attacks ran, the adversarial image and its maps beside."""
    methods, classes = data["methods"], data["classes"]
    maps = {(m["sample_id"], m["method"]): m for m in data["maps"]}
    images = data["images"][:MAX_GALLERY_ROWS]
    adversarial = data.get("adversarial_eps") is not None
    per_view = 1 + len(methods)
    cols = per_view * (2 if adversarial else 1)
    fig, axes = plt.subplots(
        len(images), cols, figsize=(1.75 * cols + 0.8, 2.75 * len(images) + 0.4), squeeze=False
    )
    shown = None
    for row, image in enumerate(images):
        picture, gray = _picture(image["image"])
        label, pred = classes[image["label"]], classes[image["pred"]]
        ax = axes[row, 0]
        ax.imshow(picture, cmap="gray" if gray else None, vmin=0, vmax=1)
        colour = INK if label == pred else WARN
        ax.set_title(f"true {label}\npred {pred}", fontsize=7.5, color=colour)
        ax.set_xlabel(
            f"{image['sample_id']}\nregion swap changes\n{image['swap_flip_rate']:.0%} of preds",
            fontsize=6.5,
        )
        views = [("", image["image"], 0)]
        if adversarial:
            views.append(("adversarial_", image["adversarial_image"], per_view))
            adv_ax = axes[row, per_view]
            adv_picture, _ = _picture(image["adversarial_image"])
            adv_ax.imshow(adv_picture, cmap="gray" if gray else None, vmin=0, vmax=1)
            adv_pred = classes[image["adversarial_pred"]]
            adv_ax.set_title(
                f"PGD eps {data['adversarial_eps']}\npred {adv_pred}",
                fontsize=7.5,
                color=WARN if adv_pred != label else INK,
            )
        for prefix, view, offset in views:
            background, _ = _picture(view)
            for col, method in enumerate(methods, start=1):
                ax = axes[row, offset + col]
                entry = maps.get((image["sample_id"], method))
                if entry is None:
                    ax.axis("off")
                    continue
                shown = _overlay(ax, background, entry["adversarial_map" if prefix else "map"])
                ax.set_title(SHORT_NAMES.get(method, method), fontsize=7.5)
                if prefix:
                    ax.set_xlabel(
                        f"vs clean map\nρ {_fmt(entry.get('adversarial_rank_correlation'))} · "
                        f"top-k {_fmt(entry.get('adversarial_topk_overlap'))}",
                        fontsize=6.5,
                    )
                else:
                    ax.set_xlabel(_scores(entry), fontsize=6.5)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    if shown is not None:
        fig.colorbar(
            shown,
            ax=axes,
            fraction=0.015,
            pad=0.01,
            label="attribution ÷ max |value| of its map (red: for, blue: against the class)",
        )
    return _to_data_uri(fig)


FIGURES: dict[str, Callable[[dict], str]] = {
    "confusion": confusion,
    "reliability": reliability,
    "confidence_histogram": confidence_histogram,
    "class_distribution": class_distribution,
    "training_curves": training_curves,
    "robustness_curves": robustness_curves,
    "attribution_gallery": attribution_gallery,
}


FIGURE_TITLES = {
    "attribution_gallery": "Attribution maps per method over each explained image, with scores",
    "robustness_curves": "Robust accuracy against eps for every attack",
    "confusion": "Confusion matrix: true class by row, predicted class by column",
    "reliability": "Reliability diagram: accuracy against confidence per bin",
    "confidence_histogram": "Confidence histogram of correct and wrong predictions",
    "class_distribution": "Images per class and split",
    "training_curves": "Training and validation loss and accuracy per epoch",
}


def render_figure(data: dict) -> str:
    """A PNG data URI for one figure dict (its ``kind`` picks the drawing)."""
    return FIGURES[data["kind"]](data)
