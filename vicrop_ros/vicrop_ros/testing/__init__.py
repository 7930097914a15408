"""
Test models: tiny random checkpoints of every supported family, built in code.

Each is written in the hub layout of the family's checkpoint and loads offline through the real
``from_pretrained``. Used by the tests, the benchmarks and the tools that need a model
(``vicrop make-tiny-model``, ``vicrop-load-test``); the adapters in ``models/`` never import it.
This module imports nothing heavy, so the command line can list the names.
"""

from ..models.registry import FAMILY_NAMES

# Other sizes by name: (family, size), for CPU benchmarks: 'llava_mid' a ~170 M-parameter LLaVA
# with LLaVA-1.5's 576 image tokens; 'qwen2_5_vl_3b_shape' Qwen2.5-VL-3B's depth and token layout
# at reduced width (recipes/qwen2_5_vl.py); 'instructblip_7b_shape' instructblip-vicuna-7b's depths
# at reduced width (recipes/instructblip.py).
PRESETS = {'llava_mid': ('llava', 'mid'), 'qwen2_5_vl_3b_shape': ('qwen2_5_vl', '3b_shape'),
           'instructblip_7b_shape': ('instructblip', '7b_shape')}  # fmt: skip
MODEL_NAMES = FAMILY_NAMES + tuple(PRESETS)  # what make_tiny_model accepts
