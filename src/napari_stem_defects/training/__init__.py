"""Training of the plugin's models on digital twins (needs torch; not imported by the plugin)."""
