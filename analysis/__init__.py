"""Reports from the experiment store: ``python -m analysis.report`` (see ``analysis/report.py``)."""
