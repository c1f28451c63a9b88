"""Sweep report (Markdown + self-contained HTML + PNG plots) rebuilt from the MLflow store alone.

    from borealis_eval.report import build_report
    paths = build_report("text-ratio-cpu", Path("reports/text-ratio-cpu"))
"""

from borealis_eval.report.collect import ReportData, ReportError, load_report_data
from borealis_eval.report.render import ReportPaths, build_report

__all__ = ["ReportData", "ReportError", "ReportPaths", "build_report", "load_report_data"]
