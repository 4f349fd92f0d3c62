"""The work of each stage, as plain functions; ``flows.batch_tasks`` wraps them for Prefect."""
