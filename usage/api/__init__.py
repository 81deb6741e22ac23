"""The HTTP API of call logs, usage reports, budgets and cost alerts."""
