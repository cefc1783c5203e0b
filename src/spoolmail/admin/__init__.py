"""Operator commands behind `spoolmail …`: read views and queue actions."""
