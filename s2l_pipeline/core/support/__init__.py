"""What every stage leans on: artifact store, Parquet tables, hashes, MLflow, lineage, plots."""
