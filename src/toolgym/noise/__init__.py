"""Noise for robustness training: seeded, levelled imperfections in instructions and tool responses that never make
a task unsolvable, and a curriculum that raises the level once the policy copes."""

from toolgym.noise.curriculum import NoiseCurriculum
from toolgym.noise.instruction import INSTRUCTION_KINDS, apply_instruction_noise, protected_values
from toolgym.noise.tool import TOOL_KINDS, NoiseEvent, NoisyEnvironment, ToolNoise

__all__ = ["INSTRUCTION_KINDS", "TOOL_KINDS", "NoiseCurriculum", "NoiseEvent", "NoisyEnvironment", "ToolNoise",
           "apply_instruction_noise", "protected_values"]
