"""Figures and HTML reports that read only from the store."""

from sgdlab.report import landscape_figures, probe_figures  # noqa: F401  (register figures)
from sgdlab.report.figures import FIGURES, RunView, register_figure
from sgdlab.report.html import write_report

__all__ = ["FIGURES", "RunView", "register_figure", "write_report"]
