"""The Prefect side: start, resume and recover case runs; serve and supervise the flows."""
