"""Input data: formats, readers, ingest with rejected rows, shards, eval sets, the generator."""
