"""Policies: anything that turns conversations into completions (transformers, HTTP, scripted)."""
