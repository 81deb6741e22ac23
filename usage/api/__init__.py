"""The HTTP API of call logs (and, as it grows, of usage, budgets and alerts)."""
