"""Verification: the rule layer, the model judges, dataset expectations and published-format rules."""
