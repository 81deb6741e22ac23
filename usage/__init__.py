"""Call logs, daily usage, budgets, thresholds and alerts."""
