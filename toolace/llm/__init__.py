"""The one path to an LLM: gateway, response cache, rate limits, endpoint checks and the embedded server."""
