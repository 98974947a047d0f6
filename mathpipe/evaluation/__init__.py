"""Evaluation and reporting: one module per stage (evaluate, attention, report) and what they draw
with (plotting, report_page: the offline page's template)."""
