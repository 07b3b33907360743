"""Text rules shared by every answering mode, kept left of them all in the stage order."""
from __future__ import annotations

import re

# Report text that tries to steer a model. It is cut from what the model sees and never
# becomes an answer sentence, in any mode (see qa.extractive, qa.generate, qa.cite).
_INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget|override)\b[^.!?\n]{0,40}\b(instructions?|prompts?|rules|directions|everything above)\b"
    r"|\b(system prompt|you are now|as an ai (language )?model|new instructions?\s*:|"
    r"(assistant|model|ai)s?,? (must|should) (now )?(answer|say|reply|respond|cite))",
    re.IGNORECASE,
)


def is_instruction(text: str) -> bool:
    """Whether a report sentence reads as an instruction to the model (a prompt injection)."""
    return bool(_INSTRUCTION.search(text))
