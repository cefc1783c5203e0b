"""The relay daemon: pickup, cleanup, queue, delivery, bounces."""
