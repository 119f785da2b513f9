"""Results: continual metrics of the accuracy matrix (``metrics.py``), the results of a run as they
grow (``record.py``) and its reports (``report.py``)."""
