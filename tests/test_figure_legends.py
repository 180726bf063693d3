"""Every chart legend of a real report sits where it covers no data, tick label or axis label."""

from __future__ import annotations

from auditclf.report import figures
from auditclf.report.artifacts import read_artifacts
from auditclf.results import AuditResult


def _shown_ticks(ax) -> list:
    """The tick labels matplotlib draws: those within the axes' limits."""
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    shown = [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
    return shown + [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]


def test_no_legend_covers_the_axes_or_their_labels(digits_run, monkeypatch):
    drawn = []

    def keep(fig) -> str:
        drawn.append(fig)
        return "data:image/png;,"

    monkeypatch.setattr(figures, "_to_data_uri", keep)
    result = AuditResult.load(digits_run / "report.json")
    read_artifacts(digits_run, result)
    model = result.models["baseline"]
    for section in model.sections:
        for data in section.get("figures", {}).values():
            if data["kind"] != "attribution_gallery":
                figures.render_figure(data, model.arrays)
    figures.training_curves(model.training)
    legends = 0
    for fig in drawn:
        renderer = fig.canvas.get_renderer()
        fig.canvas.draw()
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            legends += 1
            box = legend.get_window_extent(renderer)
            labels = [*_shown_ticks(ax), ax.xaxis.label, ax.yaxis.label, ax.title]
            assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
            for text in labels:
                if text.get_text():
                    assert not box.overlaps(text.get_window_extent(renderer)), text.get_text()
    # reliability, confidence, class balance, training (2), robustness, fairness (2 attributes)
    assert legends >= 8
