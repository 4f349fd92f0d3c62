"""The pipeline's stages, one module each, as the paper draws them: mining, context tree, API synthesis,
calibration, dialogs (generation, complexity loss, self-guidance, verification) and publish.

Each stage is a Prefect subflow (the UI shows it with its own state, duration, logs and artifacts) that takes the
run's :class:`~flows.stages.run_context.RunContext` and a small typed input and returns a
:class:`~flows.stages.run_context.StageResult`. The stage's own rules (document duplicates, ledger reuse, the
out-of-band rejection) are plain functions in its module, unit-tested without Prefect.
"""
