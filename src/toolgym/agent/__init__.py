"""Agent rollouts: the multi-turn loop, tool-call parsing, the user simulator and context management."""
