"""
Hub file layouts: rewrite a ``save_pretrained`` directory as its hub checkpoint's files.

A fresh ``save_pretrained`` writes today's layout (the image processor inside
``processor_config.json``, one ``chat_template.jinja``, the generation config of the tokenizer's
ids). The checkpoints robots load were written by older versions and by hand: a separate
``preprocessor_config.json``, ``processor_class`` names that differ from the files' real contents
(InstructBLIP names a video processor), ``chat_template.json``, and generation configs whose ids
disagree with the tokenizer. The test models are written the hub's way, so that loading is tested
on what users load (ENVIRONMENT.md lists the facts per checkpoint).
"""

from collections.abc import Callable
from dataclasses import dataclass
import json
from pathlib import Path

from transformers.tokenization_utils_base import TOKENIZER_CONFIG_FILE
from transformers.utils import PROCESSOR_NAME

IMAGE_PROCESSOR_FILE = 'preprocessor_config.json'


@dataclass(frozen=True)
class HubLayout:
    """What one checkpoint's processor and generation files say that save_pretrained does not."""

    processor_class: str  # processor_config.json's processor_class
    # preprocessor_config.json's and tokenizer_config.json's processor_class (default: the above)
    files_processor_class: str | None = None
    chat_template_files: tuple[str, ...] = ()  # of 'chat_template.json', 'chat_template.jinja'
    generation: tuple[tuple[str, object], ...] = ()  # generation_config.json values
    # Family-specific edits of (image processor config, processor config), in place.
    edit: Callable[[dict, dict], None] | None = None


def write_hub_layout(layout: HubLayout, out_dir: Path) -> None:
    """Rewrite the processor, tokenizer, chat template and generation files in ``out_dir``."""
    processor_path = out_dir / PROCESSOR_NAME
    processor_config = json.loads(processor_path.read_text())
    image_processor = processor_config.pop('image_processor')
    files_class = layout.files_processor_class or layout.processor_class
    image_processor['processor_class'] = files_class
    processor_config['processor_class'] = layout.processor_class
    if layout.edit is not None:
        layout.edit(image_processor, processor_config)
    write_json(out_dir / IMAGE_PROCESSOR_FILE, image_processor)
    write_json(processor_path, processor_config)
    tokenizer_path = out_dir / TOKENIZER_CONFIG_FILE
    write_json(tokenizer_path, json.loads(tokenizer_path.read_text()) | {
        'processor_class': files_class
    })  # fmt: skip
    jinja = out_dir / 'chat_template.jinja'
    if jinja.exists():
        if 'chat_template.json' in layout.chat_template_files:
            write_json(out_dir / 'chat_template.json', {'chat_template': jinja.read_text()})
        if 'chat_template.jinja' not in layout.chat_template_files:
            jinja.unlink()
    if layout.generation:
        path = out_dir / 'generation_config.json'
        write_json(path, json.loads(path.read_text()) | dict(layout.generation))


def write_json(path: Path, value: dict) -> None:
    """Write ``value`` as indented, key-sorted JSON."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + '\n')
