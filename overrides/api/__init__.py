"""The HTTP API of routing overrides and route resolution."""
