"""Model-architecture changes retrofitted onto Hugging Face causal LMs."""
