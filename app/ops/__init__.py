"""Operations glue (Flask side): Gunicorn serving hooks, metrics, request logs and observation."""
