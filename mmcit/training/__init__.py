"""Training: the inner loop of a stage (``loop.py``) with its optimizer and schedule (``optim.py``),
checkpoints (``checkpoint.py``), resuming (``resume.py``), the global RNG (``rng.py``) and data
parallelism (``distributed.py``)."""
