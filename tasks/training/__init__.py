"""Fine-tuning on a published dataset."""
