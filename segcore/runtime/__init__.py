"""Execution: in-process evaluation and the Ray driver (the only ray importer in segcore)."""
