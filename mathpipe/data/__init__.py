"""Data sources (OpenR1 shards, GSM8K, CMATH, preference sets), the sample generator and prepare."""
