"""The S2L method as a plain Python library; never imports dagster."""
