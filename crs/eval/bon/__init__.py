"""The best-of-n instrument: the pool, its verdicts, the study, the selection estimator and the report."""
