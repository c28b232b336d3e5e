"""The Dagster layer: assets, checks, resources, IO managers. No algorithm lives here."""
