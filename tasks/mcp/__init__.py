"""Real tools from MCP servers: import their tools into an API pool, call them in a sandbox, serve a pool as one."""
