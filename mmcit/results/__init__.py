"""Results: continual metrics of the accuracy matrix (``metrics.py``), the results of a run as they
grow (``record.py``), its reports (``report.py``, ``html.py`` with ``svg.py``), a run folder read back
as tables and pictures (``run.py``, ``plots.py``), comparisons over seeds (``compare.py``, ``sweep.py``)
and experiment trackers (``tracking.py``)."""
