"""The plugin machinery: hook specs, the plugin manager, named providers, settings and config,
and the App that wires the chosen providers together."""
