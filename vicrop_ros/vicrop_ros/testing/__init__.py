"""
Test models: tiny random checkpoints of every supported family, built in code.

Each is written in the hub layout of the family's checkpoint and loads offline through the real
``from_pretrained``. Used by the tests, the benchmarks and the tools that need a model
(``vicrop make-tiny-model``, ``vicrop-load-test``); the adapters in ``models/`` never import it.
This module imports nothing heavy, so the command line can list the names.
"""

from ..models.registry import FAMILY_NAMES

# Other sizes by name: (family, size). 'llava_mid' is a ~170 M-parameter LLaVA for CPU benchmarks.
PRESETS = {'llava_mid': ('llava', 'mid')}
MODEL_NAMES = FAMILY_NAMES + tuple(PRESETS)  # what make_tiny_model accepts
