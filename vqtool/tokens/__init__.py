"""Token shards: the Parquet schema and the one writer."""
