"""The ``queuectl`` command line."""
