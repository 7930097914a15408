"""
The supported model families, listed once.

The loader, the CLI, the test-model recipes, the tests and the README table derive from this
list. Adding a family is one line here, its adapter module and its recipe
(docs/adding-a-family.md). Reading the list imports nothing heavy: an adapter class is imported
when it is first asked for.
"""

from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class Family:
    """One supported family of multimodal LLMs."""

    name: str  # its checkpoints' config.model_type; also its adapter and recipe module's name
    title: str  # what people call it
    adapter_class: str  # the adapter's class name in ``models/<name>.py``
    checkpoint: str  # the hub checkpoint whose files the adapter and its recipe are checked on

    @property
    def adapter(self) -> type:
        """Return the adapter class (a ``HfVisionLanguageModel``), importing its module."""
        return getattr(import_module(f'{__package__}.{self.name}'), self.adapter_class)


FAMILIES: tuple[Family, ...] = (
    Family('llava', 'LLaVA-1.5', 'LlavaAdapter', 'llava-hf/llava-1.5-7b-hf'),
    Family(
        'instructblip', 'InstructBLIP', 'InstructBlipAdapter', 'Salesforce/instructblip-vicuna-7b'
    ),
    Family('qwen2_5_vl', 'Qwen2.5-VL', 'Qwen2_5_VLAdapter', 'Qwen/Qwen2.5-VL-3B-Instruct'),
    Family('qwen3_vl', 'Qwen3-VL', 'Qwen3VLAdapter', 'Qwen/Qwen3-VL-2B-Instruct'),
    Family('smolvlm', 'SmolVLM2', 'SmolVLMAdapter', 'HuggingFaceTB/SmolVLM2-500M-Video-Instruct'),
)
FAMILY_NAMES: tuple[str, ...] = tuple(family.name for family in FAMILIES)
_BY_NAME = {family.name: family for family in FAMILIES}


def family_named(model_type: str) -> Family | None:
    """Return the family whose checkpoints have ``model_type``, or None."""
    return _BY_NAME.get(model_type)
