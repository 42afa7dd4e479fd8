"""Quality metrics as mergeable per-shard partials."""
