"""
``make_tiny_model``: build a family's test model from its recipe and save it as the hub has it.

A recipe (``recipes/<family>.py``) builds a randomly initialised model of the real transformers
class with a tokenizer trained in code and the family's real processor class
(``build(size) -> (model class, config, processor)``), and states its checkpoint's hub layout
(``HUB``). Every family of :mod:`vicrop_ros.models.registry` has one; presets name other sizes.
"""

from importlib import import_module
from pathlib import Path
from types import ModuleType

import torch
from transformers import GenerationConfig
from transformers.utils import logging as transformers_logging

from ..models.registry import FAMILY_NAMES
from . import MODEL_NAMES, PRESETS
from .hub_layout import write_hub_layout


def recipe(family: str) -> ModuleType:
    """Return the recipe module of ``family`` (a name of the registry)."""
    if family not in FAMILY_NAMES:
        raise ValueError(f'unknown family {family!r}; expected one of {FAMILY_NAMES}')
    return import_module(f'{__package__}.recipes.{family}')


def make_tiny_model(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """
    Build, save in the hub layout and return ``out_dir``; ``name`` is a family or a preset.

    Weights are random but a function of ``seed`` only (the caller's torch RNG state is left as
    it was). The directory loads offline with ``vicrop_ros.models.loader.load_model``.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f'unknown model {name!r}; expected one of {MODEL_NAMES}')
    family, size = PRESETS.get(name, (name, 'tiny'))
    family_recipe = recipe(family)
    out_dir = Path(out_dir)
    model_class, config, processor = family_recipe.build(size)
    tokenizer = processor.tokenizer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.get_text_config().bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.eval()
    transformers_logging.disable_progress_bar()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    write_hub_layout(family_recipe.HUB, out_dir)
    return out_dir
