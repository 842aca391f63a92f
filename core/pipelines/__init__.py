"""Pipelines: whole jobs from a request to files (GLB, MP4, PNG, JSON)."""
