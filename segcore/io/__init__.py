"""Storage, readers and writers: the only fsspec and pyarrow users."""
