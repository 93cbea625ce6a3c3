"""Ingestion of signed submissions and the effective-version bookkeeping of corrections."""
