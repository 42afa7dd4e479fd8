"""Command-line entry points, each a main(argv) -> int."""
