"""Reports: the study report, and the pages of a trained model (retrain, visualize)."""

from tuner.report.study_report import build_report, write_report

__all__ = ["build_report", "write_report"]
