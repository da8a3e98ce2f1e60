"""Placeholder: filled in by the mutation work on impl/ (issue 4)."""
