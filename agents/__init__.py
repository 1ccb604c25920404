"""herald's stream processors: they move data; decisions live in pure modules."""
