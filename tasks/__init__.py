"""The work of each stage, as plain functions; ``tasks.prefect_tasks`` wraps them for Prefect."""
