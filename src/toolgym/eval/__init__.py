"""Evaluation: pass@k / pass^k metrics per domain, and the JSON + HTML + plots report.

`metrics` needs only pydantic; import `toolgym.eval.report` (matplotlib, jinja2) and `toolgym.eval.screenshot`
(headless Chromium) explicitly.
"""

from toolgym.eval.metrics import OVERALL, EvalRun, GroupMetrics, group_metrics, pass_at_k, pass_hat_k

__all__ = ["OVERALL", "EvalRun", "GroupMetrics", "group_metrics", "pass_at_k", "pass_hat_k"]
