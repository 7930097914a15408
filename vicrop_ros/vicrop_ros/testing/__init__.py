"""
Test models: tiny random checkpoints of every supported family, built in code.

Each is written in the hub layout of the family's checkpoint and loads offline through the real
``from_pretrained``. Used by the tests, the benchmarks and the tools that need a model
(``vicrop make-tiny-model``, ``vicrop-load-test``); the adapters in ``models/`` never import it.
This module imports nothing heavy, so the command line can list the names.
"""

from ..models.registry import FAMILY_NAMES

# Other sizes by name: (family, size), for CPU benchmarks: 'llava_mid' a ~170 M-parameter LLaVA
# with LLaVA-1.5's 576 image tokens; the '<checkpoint>_shape' ones have that checkpoint's depths
# and token layout at reduced width (the recipe's SIZES say which widths).
PRESETS = {
    'llava_mid': ('llava', 'mid'),
    'qwen2_5_vl_3b_shape': ('qwen2_5_vl', '3b_shape'),
    'qwen3_vl_2b_shape': ('qwen3_vl', '2b_shape'),
    'instructblip_7b_shape': ('instructblip', '7b_shape'),
    'smolvlm_500m_shape': ('smolvlm', '500m_shape'),
}
MODEL_NAMES = FAMILY_NAMES + tuple(PRESETS)  # what make_tiny_model accepts
