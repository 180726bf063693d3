"""The attribution probe: Grad-CAM, Integrated Gradients and LIME through captum (the only
module importing it), with the model passes their quality scores need.

Which images: per class, the most confident correct predictions and the most
confident errors (``explain.correct_per_class`` / ``errors_per_class``); each
map explains the predicted class.

- Grad-CAM (Selvaraju et al. 2017): captum ``LayerGradCam`` on the adapter's
  target layer with the ReLU of the paper, upsampled bilinearly to the input.
- Integrated Gradients (Sundararajan et al. 2017): captum, black baseline,
  ``explain.ig_steps`` steps, internally batched; its convergence delta
  (attributions should sum to f(x) − f(baseline)) is kept per image.

Quality, per map (the model passes happen here; the analysis only averages):
- faithfulness: deletion and insertion curves (Petsiuk et al. 2018) —
  pixels removed from (set to 0) or inserted into a black image in the map's
  order, ``curve_steps`` points, tracking the predicted class's probability;
  their areas, and the same curves for a random order (seeded per image);
- sanity (Adebayo et al. 2018): the map recomputed after re-initialising the
  top ``randomized_layers`` parametrised layers, and its Spearman rank
  correlation with the original. A method that explains the model should
  change when the model does.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Lime
from scipy.stats import spearmanr

from auditclf.probes.base import PROBES, ProbeContext
from auditclf.seeding import derive_seed, torch_generator
from auditclf.train.standard import to_unit_float


def select_images(table: pd.DataFrame, correct: int, errors: int) -> list[int]:
    """Rows to explain: per class, the most confident correct and most confident wrong."""
    chosen = []
    for _, rows in table.groupby("label", sort=True):
        right = rows[rows["pred"] == rows["label"]].nlargest(correct, "confidence")
        wrong = rows[rows["pred"] != rows["label"]].nlargest(errors, "confidence")
        chosen += list(right.index) + list(wrong.index)
    return chosen


def gradcam_maps(model, layer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, H, W) Grad-CAM maps upsampled to the input size."""
    cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[:, 0].detach()


def ig_maps(model, x: torch.Tensor, target: torch.Tensor, steps: int):
    """(N, H, W) Integrated Gradients summed over channels, and (N,) convergence deltas."""
    ig = IntegratedGradients(model)
    attributions, delta = ig.attribute(
        x,
        baselines=torch.zeros_like(x),
        target=target,
        n_steps=steps,
        internal_batch_size=max(len(x) * 8, 32),
        return_convergence_delta=True,
    )
    return attributions.sum(1).detach(), delta.detach().abs()


@torch.no_grad()
def curve_areas(
    model, x: torch.Tensor, target: torch.Tensor, order: torch.Tensor, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Areas under the deletion and insertion curves for one pixel order per image.

    ``order``: (N, H·W) pixel indices, most important first. Probabilities of
    ``target`` after revealing/hiding the first k·(H·W)/steps pixels, k = 0..steps,
    averaged (the trapezoid area on a unit x-axis).
    """
    n, c, h, w = x.shape
    fractions = torch.linspace(0, 1, steps + 1)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(h * w).expand(n, -1))
    deletion, insertion = [], []
    for fraction in fractions:
        hidden = (ranks < int(round(float(fraction) * h * w))).view(n, 1, h, w)
        deleted = torch.where(hidden, torch.zeros_like(x), x)
        inserted = torch.where(hidden, x, torch.zeros_like(x))
        probs = torch.softmax(model(torch.cat([deleted, inserted])).float(), 1)
        picked = probs.gather(1, torch.cat([target, target])[:, None])[:, 0]
        deletion.append(picked[:n])
        insertion.append(picked[n:])

    def area(curve: list[torch.Tensor]) -> np.ndarray:
        values = torch.stack(curve, 1)
        return ((values[:, 1:] + values[:, :-1]) / 2).mean(1).cpu().numpy()

    return area(deletion), area(insertion)


def randomized_copy(model, layers: int, seed: int):
    """A copy of ``model`` whose top ``layers`` parametrised modules are re-initialised."""
    clone = copy.deepcopy(model)
    modules = [
        m
        for m in clone.modules()
        if hasattr(m, "reset_parameters")
        and any(p.requires_grad for p in m.parameters(recurse=False))
    ]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    for module in modules[-layers:]:
        module.reset_parameters()
    torch.random.set_rng_state(generator_state)
    return clone.eval()


def superpixels(image: np.ndarray) -> np.ndarray:
    """(H, W) integer segments of one (C, H, W) image in [0, 1]: SLIC (scikit-image) from
    32 px up, else a grid of about 7 × 7 cells (SLIC has too little to work with below)."""
    _, h, w = image.shape
    if min(h, w) >= 32:
        from skimage.segmentation import slic

        channels = image.transpose(1, 2, 0)
        return slic(
            channels if channels.shape[2] == 3 else channels[..., 0],
            n_segments=50,
            compactness=10,
            start_label=0,
            channel_axis=-1 if channels.shape[2] == 3 else None,
        )
    cell = max(1, min(h, w) // 7)
    rows, cols = np.arange(h) // cell, np.arange(w) // cell
    return rows[:, None] * (cols.max() + 1) + cols[None, :]


def lime_maps(
    model, x: torch.Tensor, target: torch.Tensor, samples: int, ids, seed: int
) -> torch.Tensor:
    """(N, H, W) LIME weights of each superpixel (Ribeiro et al. 2016), captum's ``Lime``
    with its default Lasso surrogate; the ``samples`` perturbed images of one explanation
    are evaluated in one batch, and sampling is seeded from (seed, image id)."""
    lime = Lime(model)
    maps = []
    devices = [x.device] if x.device.type == "cuda" else []
    for i in range(len(x)):
        mask = torch.as_tensor(superpixels(x[i].cpu().numpy()), device=x.device)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(seed, "lime", ids[i]))
            weights = lime.attribute(
                x[i : i + 1],
                baselines=0.0,
                target=target[i : i + 1],
                feature_mask=mask.expand_as(x[i : i + 1]),
                n_samples=samples,
                perturbations_per_eval=samples,
            )
        maps.append(weights[0].sum(0).detach())
    return torch.stack(maps)


def _maps(method: str, model, x, target, cfg, ids, seed) -> tuple[torch.Tensor, np.ndarray | None]:
    if method == "gradcam":
        return gradcam_maps(model, model.target_layer, x, target), None
    if method == "lime":
        return lime_maps(model, x, target, cfg.lime_samples, ids, seed), None
    maps, delta = ig_maps(model, x, target, cfg.ig_steps)
    return maps, delta.cpu().numpy()


def stand_in_artifacts(cfg) -> dict:
    """Artifacts shaped like the probe's (one flat map per method), for dry runs of keys."""
    entry = {
        "sample_id": "dry-run",
        "label": 0,
        "pred": 0,
        "deletion_auc": 0.5,
        "insertion_auc": 0.5,
        "random_deletion_auc": 0.5,
        "random_insertion_auc": 0.5,
        "randomization_correlation": 0.0,
        "convergence_delta": 0.0,
        "map": [[0.0]],
        "image": [[[0.0]]],
    }
    return {
        "maps": [{**entry, "method": m} for m in cfg.methods],
        "skipped": [],
        "methods": list(cfg.methods),
        "curve_steps": cfg.curve_steps,
        "randomized_layers": cfg.randomized_layers,
        "ig_steps": cfg.ig_steps,
    }


@PROBES.register(
    "attributions",
    summary="Grad-CAM and Integrated Gradients (captum) with "
    "deletion/insertion faithfulness and a randomisation sanity check",
)
def attribution_probe(ctx: ProbeContext, table: pd.DataFrame) -> pd.DataFrame:
    cfg = ctx.explain
    if cfg is None or not cfg.enabled:
        return table
    rows = select_images(table, cfg.correct_per_class, cfg.errors_per_class)
    if not rows:
        return table
    model = ctx.model.eval()
    x = to_unit_float(torch.from_numpy(ctx.test.images[rows]), ctx.device)
    target = torch.tensor(table.loc[rows, "pred"].to_numpy(np.int64), device=ctx.device)
    n, _, h, w = x.shape
    methods, skipped = [], []
    for method in cfg.methods:
        if method == "gradcam" and model.target_layer is None:
            skipped.append("gradcam: the model has no convolutional layer")
        else:
            methods.append(method)
    random_model = randomized_copy(model, cfg.randomized_layers, ctx.seed)
    random_order = torch.stack(
        [
            torch.randperm(h * w, generator=torch_generator(ctx.seed, "order", ctx.test.ids[r]))
            for r in rows
        ]
    ).to(ctx.device)
    random_del, random_ins = curve_areas(model, x, target, random_order, cfg.curve_steps)
    results = []
    for method in methods:
        ids = [ctx.test.ids[r] for r in rows]
        maps, delta = _maps(method, model, x, target, cfg, ids, ctx.seed)
        order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
        deletion, insertion = curve_areas(model, x, target, order, cfg.curve_steps)
        noise_maps, _ = _maps(method, random_model, x, target, cfg, ids, ctx.seed)
        for i, row in enumerate(rows):
            original = maps[i].flatten().cpu().numpy()
            randomized = noise_maps[i].flatten().cpu().numpy()
            correlation = (
                float(spearmanr(original, randomized).statistic)
                if original.std() > 0 and randomized.std() > 0
                else float("nan")
            )
            results.append(
                {
                    "sample_id": str(ctx.test.ids[row]),
                    "method": method,
                    "label": int(table.loc[row, "label"]),
                    "pred": int(target[i]),
                    "deletion_auc": float(deletion[i]),
                    "insertion_auc": float(insertion[i]),
                    "random_deletion_auc": float(random_del[i]),
                    "random_insertion_auc": float(random_ins[i]),
                    "randomization_correlation": correlation,
                    "convergence_delta": None if delta is None else float(delta[i]),
                    "map": np.round(maps[i].cpu().numpy().astype(np.float64), 5).tolist(),
                    "image": np.round(x[i].cpu().numpy(), 3).tolist(),
                }
            )
    ctx.artifacts["explanations"] = {
        "maps": results,
        "skipped": skipped,
        "methods": methods,
        "curve_steps": cfg.curve_steps,
        "randomized_layers": cfg.randomized_layers,
        "ig_steps": cfg.ig_steps,
    }
    return table
