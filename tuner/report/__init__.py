"""Reports: the study report, and the pages of a trained model (retrain, visualize).

Every figure is collected as plain data first, then drawn with Plotly; every page is a
`page.Page` rendered by `render`.
"""

from tuner.report.model_page import RETRAIN_REPORT_FILE, retrain_page, write_retrain_report
from tuner.report.page import Page, Section, render
from tuner.report.study_report import build_report, write_report
from tuner.report.visualize import test_image, visualization_page, write_visualization

__all__ = [
    "RETRAIN_REPORT_FILE",
    "Page",
    "Section",
    "build_report",
    "render",
    "retrain_page",
    "test_image",
    "visualization_page",
    "write_report",
    "write_retrain_report",
    "write_visualization",
]
