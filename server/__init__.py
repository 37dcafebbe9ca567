"""The MCP server, the service layer it shares with the CLI, and the CLI itself."""
