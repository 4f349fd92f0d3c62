"""ToolACE data platform: command line, configuration and the LLM gateway.

The pipeline itself lives in the top-level ``flows`` (composition), ``tasks`` (the work) and
``schemas`` (records and table contracts) packages.
"""

__version__ = "0.1.0"
