"""Errors a user can cause and fix. The CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """Bad input or environment: the message says what is wrong and how to fix it."""


class ConfigError(UserError):
    pass


class CorpusError(UserError):
    pass


class EndpointError(UserError):
    """The LLM endpoint cannot be reached or does not serve the requested model."""
