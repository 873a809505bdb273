"""toolgym: environment scaling, agentic rollouts and asynchronous RL for tool-using reasoning models."""

__version__ = "0.1.0"
