"""Heavy Thinking: K parallel candidates, then a summary model that reasons over them (and its baselines)."""
