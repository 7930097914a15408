"""
What the hub checkpoints' own files do to loading and answering, on tiny models in those layouts.

Each tiny directory is written in its checkpoint's hub layout (``testing.hub_layout``:
processor_class names, separate ``preprocessor_config.json``, chat template files, InstructBLIP's
mismatched eos); these tests load them through ``load_model`` as the node and the CLI do.
"""

import json
import os
import subprocess
import sys

import pytest
from sample_data import FAMILIES, random_image
import torch
from transformers import AutoProcessor
from transformers.utils import is_torchvision_available

from vicrop_ros.core import Vicrop, VicropConfig
from vicrop_ros.models.loader import load_model
from vicrop_ros.testing.tiny import recipe

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('family', FAMILIES)
def test_each_family_loads_its_hub_layout_with_its_own_processor_class(family, tiny_model_dir):
    directory = tiny_model_dir(family)
    saved = json.loads((directory / 'processor_config.json').read_text())
    assert saved['processor_class'] == recipe(family).HUB.processor_class
    assert 'image_processor' not in saved and (directory / 'preprocessor_config.json').is_file()
    model = load_model(str(directory), device='cpu', dtype='float32')
    assert isinstance(model.processor, model.processor_class)
    if family != 'llava' and not is_torchvision_available():
        # What the hub files make AutoProcessor do: a video processor that needs torchvision.
        with pytest.raises((ImportError, ValueError), match='(?i)torchvision'):
            AutoProcessor.from_pretrained(directory)


def test_qwen_reads_the_hub_pixel_budget_and_a_configured_one(tiny_model, tiny_model_dir):
    directory = tiny_model_dir('qwen2_5_vl')
    published = json.loads((directory / 'preprocessor_config.json').read_text())
    default = tiny_model('qwen2_5_vl')
    assert default.processor.image_processor.size['longest_edge'] == published['max_pixels']
    budget = 112 * 112  # 16 tokens at most
    small = load_model(str(directory), device='cpu', dtype='float32', pixel_budget=(0, budget))
    assert small.image_tokens(640, 480) <= 16 < default.image_tokens(640, 480)
    frame = random_image(640, 480, seed=51)
    result = Vicrop(small, VicropConfig(max_new_tokens=2))(frame, 'What is it?')
    assert result.saliency.size <= 16  # the map has the budget's grid
    with pytest.raises(ValueError, match='min_pixels 50000 is over max_pixels 12544'):
        load_model(str(directory), device='cpu', pixel_budget=(50_000, budget))
    with pytest.raises(ValueError, match='fixed input size'):
        load_model(str(tiny_model_dir('llava')), device='cpu', pixel_budget=(0, budget))


def test_the_qwen_map_reaches_the_box_search_on_its_own_grid(tiny_model):
    model = tiny_model('qwen2_5_vl')
    for width, height in ((640, 480), (1000, 380), (333, 777)):
        result = Vicrop(model, VicropConfig(max_new_tokens=1))(
            random_image(width, height, seed=52), 'What is it?'
        )
        assert result.saliency.shape == result.maps[0].grid, (width, height)


def test_instructblip_stops_at_its_tokenizers_eos_whatever_generation_config_says(tiny_model):
    model = tiny_model('instructblip')
    eos = model.processor.tokenizer.eos_token_id
    assert model.model.generation_config.eos_token_id != eos  # the hub file's mismatch
    head = model.output_head
    steps = []

    def always_eos(module, inputs, logits):
        steps.append(logits.shape[1])
        forced = torch.full_like(logits, -1e4)
        forced[..., eos] = 1e4
        return forced

    handle = head.register_forward_hook(always_eos)
    try:
        answer = Vicrop(model, VicropConfig(method='none', max_new_tokens=8))(
            random_image(64, 48, seed=53), 'What is it?'
        ).answer
    finally:
        handle.remove()
    assert answer == ''
    assert len(steps) == 1  # the first token was </s>: no second decoding step


@pytest.mark.parametrize('family', FAMILIES)
def test_special_tokens_typed_in_a_question_stay_text(family, tiny_model):
    model = tiny_model(family)
    question = 'What does <image><image> mean, and <|im_start|> or </s>?'
    config = VicropConfig(max_new_tokens=2)
    formatted = model.format_question(question, config)
    ids = model.processor.tokenizer(formatted)['input_ids']
    assert model.image_token_id not in ids
    specials = set(model.processor.tokenizer.all_special_ids) - {
        model.processor.tokenizer.bos_token_id
    }
    assert not specials & set(ids[1:])
    result = Vicrop(model, config)(random_image(96, 64, seed=54), question)
    assert isinstance(result.answer, str) and result.box is not None


def test_an_uncached_hub_id_fails_at_once_with_how_to_fetch_it(tmp_path):
    # A fresh process with an empty cache and the network allowed: the loader must not try it.
    env = os.environ | {'HF_HOME': str(tmp_path / 'hf'), 'HF_ENDPOINT': 'http://127.0.0.1:9'}
    env.pop('HF_HUB_OFFLINE', None)
    command = [sys.executable, '-c', (
        'from vicrop_ros.models.loader import load_model\n'
        'try:\n'
        "    load_model('someone/not-cached-vl', device='cpu')\n"
        'except ValueError as error:\n'
        '    print(error)\n'
    )]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "model 'someone/not-cached-vl' is not in the local Hugging Face cache" in result.stdout
    assert '`hf download someone/not-cached-vl`' in result.stdout
    assert 'allow_download' in result.stdout
