"""Control and visibility: cancel, restart, remove, purge, queues, schedules, logs, status."""
