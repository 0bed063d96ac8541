"""The bundled queuectl plugins: ordinary plugins, registered through entry points."""
