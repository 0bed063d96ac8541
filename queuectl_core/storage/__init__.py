"""Storage: the optional capabilities core detects (with their fallbacks) and the SQL layer the
bundled backends share. The required protocol is :mod:`queuectl_core.interfaces`."""
