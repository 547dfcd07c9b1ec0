"""Scripts that regenerate the papers' key figures from our own runs (see README.md here)."""
