"""Evaluation: batched generation with per-sample routing (``generate.py``), the scorers
(``scoring.py`` and ``scorers/``), scoring answer files (``answers.py``) and suites (``suites.py``),
and answering new prompts with a finished run (``predict.py``)."""
