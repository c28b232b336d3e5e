"""SmallToLarge (S2L) data selection as a Dagster project."""

__version__ = "0.1.0"
