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
import math
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Lime, LimeBase
from scipy.stats import spearmanr

from auditclf import distributed
from auditclf.gradients import NO_GRADIENTS, gradient_methods
from auditclf.keys import explain_column
from auditclf.probes.attacks import adversarial_eps, adversarial_versions
from auditclf.probes.base import PROBES, ProbeContext
from auditclf.progress import Task
from auditclf.registry import Registry
from auditclf.seeding import derive_seed, numpy_rng, torch_generator
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
    ranks.scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))
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


def _parametrised(model) -> list:
    """The modules of ``model`` that hold trainable weights and can re-initialise them."""
    return [
        m
        for m in model.modules()
        if hasattr(m, "reset_parameters")
        and any(p.requires_grad for p in m.parameters(recurse=False))
    ]


def randomized_copy(model, layers: int, seed: int):
    """A copy of ``model`` whose top ``layers`` parametrised modules are re-initialised;
    None when it has none (a model run by another runtime holds no torch layers): the
    sanity check cannot run, and an unchanged copy would fail it for the method's fault."""
    if not _parametrised(model):
        return None
    clone = copy.deepcopy(model)
    modules = _parametrised(clone)
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
    """(N, H, W) LIME weights of each superpixel (Ribeiro et al. 2016), through captum's
    ``LimeBase`` with the settings of captum's ``Lime``: Bernoulli(0.5) superpixel samples,
    removed superpixels set to 0, the exponential cosine kernel of width 1 and a Lasso
    (alpha 0.01) surrogate; sampling is seeded from (seed, image id).

    Two things leave captum's per-sample loop, with the same results: the forward
    function takes the (S, F) binary samples and builds all S images at once
    (``x · z[:, segments]``), and the kernel, cos(x, x_z) = sqrt(z · e / Σe) for a black
    baseline with e the per-superpixel sums of x², is a dot product of F numbers instead
    of two image-sized passes. All samples of one explanation go through one forward pass.

    captum draws, weighs and fits sample by sample on the device of the input it is given,
    so it is given the image on the CPU: on a GPU, that spares a copy and a synchronisation
    per sample; only the forward pass (the S images built on the device) and its logits
    cross, once per image.
    """
    maps = []
    on_cpu, targets = x.detach().cpu(), target.cpu()
    devices = [x.device] if x.device.type == "cuda" else []  # manual_seed seeds them too
    for i in range(len(x)):
        image = on_cpu[i : i + 1]
        segments = torch.as_tensor(superpixels(on_cpu[i].numpy())).long()
        features = int(segments.max()) + 1
        energy = torch.zeros(features, dtype=torch.float64).index_add_(
            0, segments.flatten(), image.double().pow(2).sum(1).flatten()
        )
        total = float(energy.sum()) or 1.0

        def forward(z: torch.Tensor, image=x[i : i + 1], segments=segments) -> torch.Tensor:
            mask = z.to(image.device, image.dtype)[:, segments.to(image.device)][:, None]
            return model(image * mask).cpu()

        def kernel(_original, _perturbed, z: torch.Tensor, energy=energy, total=total, **_):
            cosine = math.sqrt(max(float(z.to(energy.dtype) @ energy[:, None]), 0.0) / total)
            return math.exp(-((1 - cosine) ** 2) / 2)

        # captum's Lime with its defaults (a Lasso of alpha 0.01, Bernoulli(0.5) samples), read
        # off a public Lime, minus its per-sample image building: the forward builds them all
        defaults = Lime(forward)
        lime = LimeBase(
            forward,
            defaults.interpretable_model,
            similarity_func=kernel,
            perturb_func=defaults.perturb_func,
            perturb_interpretable_space=True,
            from_interp_rep_transform=lambda z, _inputs, **_: z,
            to_interp_rep_transform=None,
        )
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(seed, "lime", ids[i]))
            coefficients = lime.attribute(
                image,
                target=targets[i : i + 1],
                n_samples=samples,
                perturbations_per_eval=samples,
                num_interp_features=features,
            )
        # captum's Lime gives every channel of a superpixel its weight; the maps sum channels
        maps.append(x.shape[1] * coefficients.flatten().to(x.dtype)[segments])
    return torch.stack(maps).to(x.device)


class AttributionMethod(Protocol):
    """One attribution method: whether it can explain a model, and its maps.

    A new method is one class below (a few lines around captum) registered under a name of
    :data:`auditclf.catalog.CATALOG` (``attribution``), with its titles in
    :data:`auditclf.catalog.ATTRIBUTION_FACTS`; ``tests/test_methods.py`` runs every one.
    """

    def unavailable(self, model) -> str | None:
        """Why it cannot explain ``model`` (the report states it), or None when it can."""

    def maps(
        self, model, x: torch.Tensor, target: torch.Tensor, cfg, ids, seed: int
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """(N, H, W) maps of ``x`` (N, C, H, W) for the classes ``target`` on x's device and
        dtype, and (N,) convergence deltas where the method has them (else None); ``cfg`` is
        the :class:`~auditclf.config.ExplainConfig`, ``ids`` the images' sample ids."""


ATTRIBUTIONS: Registry[type[AttributionMethod]] = Registry("attribution")


@ATTRIBUTIONS.register("gradcam")
class GradCam:
    """Grad-CAM on the adapter's target layer (:func:`gradcam_maps`)."""

    def unavailable(self, model) -> str | None:
        if not getattr(model, "gradients", True):
            return f"Grad-CAM: it follows the model's gradients, and {NO_GRADIENTS}"
        if model.target_layer is None:
            return "Grad-CAM: the model has no convolutional layer to take it from"
        return None

    def maps(self, model, x, target, cfg, ids, seed) -> tuple[torch.Tensor, None]:
        return gradcam_maps(model, model.target_layer, x, target), None


@ATTRIBUTIONS.register("integrated_gradients")
class IntegratedGradientsMethod:
    """Integrated Gradients from a black baseline in ``ig_steps`` steps (:func:`ig_maps`)."""

    def unavailable(self, model) -> str | None:
        if not getattr(model, "gradients", True):
            return f"Integrated Gradients: it integrates the model's gradients, and {NO_GRADIENTS}"
        return None

    def maps(self, model, x, target, cfg, ids, seed) -> tuple[torch.Tensor, np.ndarray]:
        maps, delta = ig_maps(model, x, target, cfg.ig_steps)
        return maps, delta.cpu().numpy()


@ATTRIBUTIONS.register("lime")
class LimeMethod:
    """LIME over superpixels, ``lime_samples`` samples seeded per image (:func:`lime_maps`)."""

    one_at_a_time = True  # each image's passes are its own: a block's filler is not explained

    def unavailable(self, model) -> None:
        return None

    def maps(self, model, x, target, cfg, ids, seed) -> tuple[torch.Tensor, None]:
        return lime_maps(model, x, target, cfg.lime_samples, ids, seed), None


def _maps(method: str, model, x, target, cfg, ids, seed) -> tuple[torch.Tensor, np.ndarray | None]:
    """The maps and convergence deltas of the registered method ``method``."""
    return ATTRIBUTIONS.get(method)().maps(model, x, target, cfg, ids, seed)


def _block_maps(
    method: str, model, x, target, cfg, ids, seed, real: int
) -> tuple[torch.Tensor, np.ndarray | None]:
    """:func:`_maps` of a block whose first ``real`` images are explained: a method that
    explains one image at a time skips the filler (copies of the last real map stand in)."""
    if not getattr(ATTRIBUTIONS.get(method), "one_at_a_time", False) or real == len(x):
        return _maps(method, model, x, target, cfg, ids, seed)
    maps, delta = _maps(method, model, x[:real], target[:real], cfg, ids[:real], seed)
    missing = len(x) - real
    maps = torch.cat([maps, maps[-1:].expand(missing, *maps.shape[1:])])
    return maps, None if delta is None else np.concatenate([delta, np.repeat(delta[-1:], missing)])


def rank_agreement(a: np.ndarray, b: np.ndarray, top: float) -> tuple[float, float]:
    """Spearman correlation of two flat maps, and the share of ``a``'s top ``top`` fraction
    of pixels that is also in ``b``'s (NaN correlation when a map is flat)."""
    k = max(1, int(round(top * a.size)))
    top_a, top_b = np.argsort(-a, kind="stable")[:k], np.argsort(-b, kind="stable")[:k]
    overlap = len(np.intersect1d(top_a, top_b))
    if a.std() == 0 or b.std() == 0:
        return float("nan"), overlap / k
    return float(spearmanr(a, b).statistic), overlap / k


def shortcut_region(masks: np.ndarray | None, h: int, w: int, n: int) -> tuple[np.ndarray, str]:
    """(n, H, W) bool: the pixels a shortcut would live in — outside the object where masks
    exist, else the image border (the outer eighth of the side)."""
    if masks is not None:
        return ~masks.astype(bool), "outside the object"
    band = max(1, round(min(h, w) / 8))
    region = np.ones((h, w), dtype=bool)
    region[band:-band, band:-band] = False
    return np.broadcast_to(region, (n, h, w)).copy(), f"on the outer {band}-pixel border"


def pointing_tolerance(h: int, w: int) -> int:
    """The pointing game's tolerance (Zhang et al. 2018: 15 px at 224 px), scaled to the image."""
    return max(1, round(15 * min(h, w) / 224))


def localisation(heat: np.ndarray, mask: np.ndarray) -> tuple[float, bool]:
    """Share of |attribution| inside the object mask, and whether the map's maximum falls
    within ``pointing_tolerance`` pixels of the object (the pointing game)."""
    magnitude = np.abs(heat)
    total = magnitude.sum()
    inside = float(magnitude[mask].sum() / total) if total > 0 else float("nan")
    tol = pointing_tolerance(*mask.shape)
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    window = mask[max(0, r - tol) : r + tol + 1, max(0, c - tol) : c + tol + 1]
    return inside, bool(window.any())


def region_share(heat: np.ndarray, region: np.ndarray) -> float:
    magnitude = np.abs(heat)
    total = magnitude.sum()
    return float(magnitude[region].sum() / total) if total > 0 else float("nan")


IG = "integrated_gradients"
NO_LAYERS = (
    "the model-randomisation check (Adebayo et al. 2018): the model has no torch layers "
    "to re-initialise"
)
SWAP_DONORS = 4  # other test images whose region each explained image receives


@torch.no_grad()
def region_swap_flips(
    model,
    x: torch.Tensor,
    pred: torch.Tensor,
    region: np.ndarray,
    donors: torch.Tensor,
    donor_regions: np.ndarray,
) -> np.ndarray:
    """Per image, the share of donor images whose region, pasted into the image's region,
    changes the prediction (a counterfactual occlusion: the object stays, what surrounds it
    comes from another image). ``donors``: (N, K, C, H, W); where a donor's own object
    covers the region, the donor's mean region colour fills in."""
    n, k = donors.shape[:2]
    inside = torch.as_tensor(np.array(region), device=x.device)[:, None, None]  # (N,1,1,H,W)
    donor_inside = torch.as_tensor(np.array(donor_regions), device=x.device)[:, :, None]
    counts = donor_inside.sum((3, 4), keepdim=True).clamp(min=1)
    donor_mean = (donors * donor_inside).sum((3, 4), keepdim=True) / counts
    fill = torch.where(donor_inside, donors, donor_mean.expand_as(donors))
    swapped = torch.where(inside, fill, x[:, None].expand_as(donors))
    new = model(swapped.flatten(0, 1)).argmax(1).view(n, k)
    return (new != pred[:, None]).float().mean(1).cpu().numpy()


def _donors(ctx: ProbeContext, rows: list[int], region_of) -> tuple[torch.Tensor, np.ndarray]:
    """SWAP_DONORS other test images per explained image, drawn from (seed, image id)."""
    total = len(ctx.test.labels)
    picks = []
    for row in rows:
        choices = numpy_rng(derive_seed(ctx.seed, "donors", ctx.test.ids[row])).permutation(total)
        picks.append([c for c in choices[: SWAP_DONORS + 1] if c != row][:SWAP_DONORS])
    picks = np.array(picks)
    images = to_unit_float(torch.from_numpy(np.asarray(ctx.test.images[picks.ravel()])), ctx.device)
    return images.view(*picks.shape, *images.shape[1:]), region_of(picks)


def _noisy(x: torch.Tensor, std: float, seed: int, ids) -> torch.Tensor:
    noise = torch.stack(
        [torch.randn(x.shape[1:], generator=torch_generator(seed, "noise", i)) for i in ids]
    ).to(x.device)
    return (x + std * noise).clamp(0, 1)


def _settings(cfg) -> dict:
    """The explain settings a report states beside the scores."""
    return {
        "curve_steps": cfg.curve_steps,
        "randomized_layers": cfg.randomized_layers,
        "ig_steps": cfg.ig_steps,
        "lime_samples": cfg.lime_samples,
        "noise_std": cfg.noise_std,
        "top_fraction": cfg.top_fraction,
    }


def explain_columns(
    size: int, rows, per_image: dict[str, list], per_method: dict[str, dict[str, list]]
) -> dict[str, np.ndarray]:
    """The probe's sample-table columns (see :func:`auditclf.keys.explain_column`): each
    value list holds one number per explained row, in ``rows`` order; other rows are NaN."""
    named = {explain_column(what): values for what, values in per_image.items()}
    for method, scores in per_method.items():
        named |= {explain_column(what, method): values for what, values in scores.items()}
    columns = {}
    for name, values in named.items():
        column = np.full(size, np.nan)
        column[np.asarray(rows, dtype=np.int64)] = np.asarray(values, dtype=np.float64)
        columns[name] = column
    return columns


def _run_notes(cfg, methods, skipped, explained, region, has_masks, eps) -> dict:
    """How the probe ran (``artifacts["explanations"]``): the scores are columns, the
    images and maps arrays."""
    return {
        "explained": explained,
        "skipped": skipped,
        "methods": list(methods),
        **_settings(cfg),
        "region": region,
        "swap_donors": SWAP_DONORS,
        "has_masks": has_masks,
        "adversarial_eps": eps,
    }


def stand_in_columns(
    cfg,
    labels: np.ndarray,
    num_classes: int,
    *,
    has_masks: bool,
    adversarial: bool,
    gradients: bool = True,
) -> tuple[dict[str, np.ndarray], dict]:
    """Columns and run notes shaped like the probe's (the first row of each class explained,
    flat maps), for dry runs that list the metric keys a run will produce; a class without
    test images has none explained, as in a real run. On a model without ``gradients`` only
    the gradient-free methods run, and no adversarial map is made."""
    methods = [m for m in cfg.methods if gradients or m not in gradient_methods([m])]
    adversarial = adversarial and gradients
    firsts = [np.flatnonzero(labels == label)[:1] for label in range(num_classes)]
    rows = [int(first[0]) for first in firsts if len(first)]
    half, zero, one = [0.5] * len(rows), [0.0] * len(rows), [1.0] * len(rows)
    per_image = {
        "rank": list(range(len(rows))),
        "random_deletion_auc": half,
        "random_insertion_auc": half,
        "region_area": half,
        "swap_flip_rate": zero,
    }
    scores = {
        "deletion_auc": half,
        "insertion_auc": half,
        "randomization_correlation": zero,
        "noise_rank_correlation": one,
        "noise_topk_overlap": one,
        "region_share": zero,
    }
    if adversarial:
        scores |= {"adversarial_rank_correlation": one, "adversarial_topk_overlap": one}
    if has_masks:
        per_image["mask_area"] = half
        scores |= {"mask_mass": one, "pointing_hit": one}
    per_method = {m: scores | ({"convergence_delta": zero} if m == IG else {}) for m in methods}
    region = "outside the object" if has_masks else "on the image border"
    notes = _run_notes(
        cfg, methods, [], len(rows), region, has_masks, "0.1" if adversarial else None
    )
    return explain_columns(len(labels), rows, per_image, per_method), notes


@PROBES.register("attributions")
def attribution_probe(ctx: ProbeContext, table: pd.DataFrame) -> pd.DataFrame:
    """Explain the selected rows with every method: scores into ``explain.*`` columns,
    the images and maps into ``ctx.arrays`` (row ``rank`` of each array is that image)."""
    cfg = ctx.explain
    if cfg is None or not cfg.enabled:
        return table
    rows = select_images(table, cfg.correct_per_class, cfg.errors_per_class)
    if not rows:
        return table
    model = ctx.model.eval()
    methods, skipped = [], []
    for method in cfg.methods:
        reason = ATTRIBUTIONS.get(method)().unavailable(model)
        if reason:
            skipped.append(reason)
        else:
            methods.append(method)
    what = f"explanations of {ctx.label}" if ctx.label else "explanations"
    share = len(distributed.shard(np.asarray(rows)))  # under torchrun, this process's
    with ctx.progress.task(what, total=len(methods) * share) as task:
        return _explain(ctx, table, rows, methods, skipped, task)


EXPLAIN_BLOCK = 8  # images explained together, in every pass a fixed number (padded)


def _explain(
    ctx: ProbeContext,
    table: pd.DataFrame,
    rows: list[int],
    methods: list[str],
    skipped: list[str],
    task: Task,
) -> pd.DataFrame:
    """:func:`attribution_probe`'s work on the selected ``rows`` with the available
    ``methods`` (``task`` advances by the images of each method, naming it).

    The rows are explained :data:`EXPLAIN_BLOCK` at a time, the last block filled up with
    copies of its last image: every pass (the maps, Integrated Gradients' steps, the
    curves, the swaps) then has the same size whichever images share it, so an image's
    scores do not depend on the others, nor on which torchrun process explains it (the
    rows are sharded, :func:`~auditclf.distributed.map_rows`)."""
    cfg = ctx.explain
    h, w = ctx.test.images.shape[-2:]
    random_model = randomized_copy(ctx.model, cfg.randomized_layers, ctx.seed)
    if random_model is None:
        skipped = [*skipped, NO_LAYERS]
    pred = table["pred"].to_numpy(np.int64)
    found = distributed.map_rows(
        np.asarray(rows, dtype=np.int64),
        lambda share: _explain_share(ctx, share, pred, methods, random_model, task),
    )
    per_image = {"rank": list(range(len(rows)))}
    per_method: dict[str, dict[str, np.ndarray]] = {method: {} for method in methods}
    for key, values in found.items():
        kind, _, what = key.partition("/")
        if kind == "image":
            per_image[what] = values
        elif kind == "array":
            ctx.arrays[what] = values
        else:
            per_method[kind][what] = values
    has_masks = ctx.test.masks is not None
    region_text = "outside the object" if has_masks else shortcut_region(None, h, w, 1)[1]
    ctx.artifacts["explanations"] = _run_notes(
        cfg, methods, skipped, len(rows), region_text, has_masks, adversarial_eps(ctx, len(rows))
    )
    columns = explain_columns(len(table), rows, per_image, per_method)
    return pd.concat([table, pd.DataFrame(columns, index=table.index)], axis=1)  # one insert


def _explain_share(
    ctx: ProbeContext,
    share: np.ndarray,
    pred: np.ndarray,
    methods: list[str],
    random_model,
    task: Task,
) -> dict[str, np.ndarray]:
    """:func:`_explain_block` over ``share`` (rows of the test split), block by block →
    its values per row, concatenated."""
    parts = []
    for start in range(0, len(share), EXPLAIN_BLOCK):
        block = share[start : start + EXPLAIN_BLOCK]
        padded = np.concatenate([block, np.repeat(block[-1:], EXPLAIN_BLOCK - len(block))])
        found = _explain_block(ctx, padded, pred, methods, random_model, task, len(block))
        parts.append({key: values[: len(block)] for key, values in found.items()})
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _explain_block(
    ctx: ProbeContext,
    rows: np.ndarray,
    pred: np.ndarray,
    methods: list[str],
    random_model,
    task: Task,
    real: int,
) -> dict[str, np.ndarray]:
    """Every score of the images ``rows`` (the first ``real`` of them are explained, the
    rest fill the block) → ``image/<what>``: the per-image scores, ``<method>/<what>``:
    each method's, ``array/<name>``: the images and maps for the artifact file."""
    cfg, model = ctx.explain, ctx.model
    x = to_unit_float(torch.from_numpy(np.asarray(ctx.test.images[rows])), ctx.device)
    target = torch.as_tensor(pred[rows], device=ctx.device)
    ids = [ctx.test.ids[r] for r in rows]
    n, _, h, w = x.shape
    task.advance(0, note=f"reference checks (region swaps, random orders), {real} images")
    masks = None if ctx.test.masks is None else ctx.test.masks[rows].astype(bool)
    region = shortcut_region(masks, h, w, n)[0]

    def region_of(picks: np.ndarray) -> np.ndarray:
        chosen = None if ctx.test.masks is None else ctx.test.masks[picks.ravel()]
        return shortcut_region(chosen, h, w, picks.size)[0].reshape(*picks.shape, h, w)

    donors, donor_regions = _donors(ctx, rows, region_of)
    swap_flips = region_swap_flips(model, x, target, region, donors, donor_regions)
    adversarial = adversarial_versions(ctx, rows)
    random_order = torch.stack(
        [torch.randperm(h * w, generator=torch_generator(ctx.seed, "order", i)) for i in ids]
    ).to(ctx.device)
    random_del, random_ins = curve_areas(model, x, target, random_order, cfg.curve_steps)
    noisy = _noisy(x, cfg.noise_std, ctx.seed, ids)
    found = {
        "image/random_deletion_auc": random_del,
        "image/random_insertion_auc": random_ins,
        "image/region_area": region.reshape(n, -1).mean(1),
        "image/swap_flip_rate": swap_flips,
        f"array/{explain_column('image')}": x.cpu().numpy().astype(np.float32),
    }
    if masks is not None:
        found["image/mask_area"] = masks.reshape(n, -1).mean(1)
    if adversarial is not None:
        with torch.no_grad():
            found["image/adversarial_pred"] = model(adversarial[0]).argmax(1).cpu().numpy()
        found[f"array/{explain_column('adversarial_image')}"] = (
            adversarial[0].cpu().numpy().astype(np.float32)
        )
    for method in methods:
        task.advance(0, note=f"{method}, {real} images")
        maps, delta = _block_maps(method, model, x, target, cfg, ids, ctx.seed, real)
        order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
        deletion, insertion = curve_areas(model, x, target, order, cfg.curve_steps)
        flat = maps.flatten(1).cpu().numpy()
        variants = {}
        if random_model is not None:
            variants["randomization"] = _block_maps(
                method, random_model, x, target, cfg, ids, ctx.seed, real
            )[0]
        variants["noise"] = _block_maps(method, model, noisy, target, cfg, ids, ctx.seed, real)[0]
        if adversarial is not None:
            variants["adversarial"] = _block_maps(
                method, model, adversarial[0], target, cfg, ids, ctx.seed, real
            )[0]
        variants = {name: other.cpu().numpy() for name, other in variants.items()}
        scores = {"deletion_auc": deletion, "insertion_auc": insertion}
        if delta is not None:
            scores["convergence_delta"] = delta
        scores["region_share"] = [region_share(flat[i].reshape(h, w), region[i]) for i in range(n)]
        scores |= _agreement(flat, variants, cfg.top_fraction)
        if masks is not None:
            located = [localisation(flat[i].reshape(h, w), masks[i]) for i in range(n)]
            scores["mask_mass"] = [mass for mass, _ in located]
            scores["pointing_hit"] = [float(hit) for _, hit in located]
        found |= {f"{method}/{what}": np.asarray(values) for what, values in scores.items()}
        found[f"array/{explain_column('map', method)}"] = flat.reshape(n, h, w).astype(np.float32)
        if adversarial is not None:
            found[f"array/{explain_column('adversarial_map', method)}"] = variants[
                "adversarial"
            ].astype(np.float32)
        task.advance(real)
    return {key: np.asarray(values) for key, values in found.items()}


def _agreement(flat: np.ndarray, variants: dict[str, np.ndarray], top: float) -> dict[str, list]:
    """Per image, each map's rank agreement with its variants: ``randomization_correlation``,
    and ``<variant>_rank_correlation`` / ``<variant>_topk_overlap`` for the others."""
    scores: dict[str, list] = {}
    for name, other in variants.items():
        found = [rank_agreement(flat[i], other[i].flatten(), top) for i in range(len(flat))]
        if name == "randomization":
            scores["randomization_correlation"] = [c for c, _ in found]
        else:
            scores[f"{name}_rank_correlation"] = [c for c, _ in found]
            scores[f"{name}_topk_overlap"] = [o for _, o in found]
    return scores
