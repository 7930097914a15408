"""Tiny random models: built, saved and loaded back through the real transformers loaders."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file
from sample_data import FAMILIES
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from vicrop_ros.models.loader import load_processor
from vicrop_ros.models.registry import FAMILIES as FAMILY_LIST
from vicrop_ros.testing import PRESETS
from vicrop_ros.testing.tiny import make_tiny_model, recipe

pytestmark = pytest.mark.slow

QUESTION = 'What is written on the small label?'
# The families whose prompts hold several images (a chat template with image items).
MULTI_IMAGE = [f.name for f in FAMILY_LIST if f.adapter.multi_image_prompts]
FRAME_HEIGHT, FRAME_WIDTH = 480, 640


@pytest.fixture(scope='module')
def frame() -> np.ndarray:
    """Return a 640 x 480 RGB camera image of uint8 noise."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def crop(frame) -> np.ndarray:
    """Return a crop of the frame, as ViCrop would add as the second image."""
    return np.ascontiguousarray(frame[100:260, 200:400])


@pytest.fixture(scope='module', params=FAMILIES)
def tiny(request, tmp_path_factory):
    """Build one family into a temporary directory and load it back."""
    family = request.param
    model_dir = make_tiny_model(family, tmp_path_factory.mktemp(family))
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = load_processor(str(model_dir))
    return family, model_dir, model, processor


def user_message(n_images: int) -> list[dict]:
    """Return one user turn with ``n_images`` image items followed by the question."""
    content = [{'type': 'image'} for _ in range(n_images)]
    return [{'role': 'user', 'content': [*content, {'type': 'text', 'text': QUESTION}]}]


def encode(family, processor, images: list[np.ndarray]):
    """Build model inputs the way the node will: chat template, or InstructBLIP's prompt."""
    if getattr(processor, 'chat_template', None) is None:  # InstructBLIP: a plain prompt
        prompt = f'Question: {QUESTION} Short answer:'
        return processor(images=images[0], text=prompt, return_tensors='pt')
    prompt = processor.apply_chat_template(user_message(len(images)), add_generation_prompt=True)
    return processor(images=images, text=prompt, return_tensors='pt')


def expected_image_tokens(family, model, inputs) -> list[int]:
    """Return the length of each run of image tokens, from the config (the recipe states how)."""
    return recipe(family).image_token_runs(model.config, inputs)


def patch_grid_640x480(family) -> list[int]:
    """Return the (t, h, w) patch grid the recipe's processor makes of a 640x480 frame."""
    return [1, *recipe(family).MAP_GRIDS_640x480['pure_grad']]


def image_token_runs(input_ids: torch.Tensor, image_token_id: int) -> list[tuple[int, int]]:
    """Return (start, length) of each contiguous run of ``image_token_id``."""
    mask = (input_ids == image_token_id).int().tolist()
    runs = []
    for i, flag in enumerate(mask):
        if flag and (i == 0 or not mask[i - 1]):
            runs.append([i, 0])
        if flag:
            runs[-1][1] += 1
    return [tuple(run) for run in runs]


def test_saved_directory_loads_with_the_real_classes(tiny):
    family, model_dir, model, processor = tiny
    config = AutoConfig.from_pretrained(model_dir)
    assert config.model_type == family
    assert type(model).__name__ == config.architectures[0]
    tokenizer = processor.tokenizer
    assert tokenizer.pad_token_id is not None
    assert tokenizer.eos_token_id is not None
    assert config.get_text_config().vocab_size >= len(tokenizer)
    image_token = str(processor.image_token)
    assert config.image_token_id == tokenizer.convert_tokens_to_ids(image_token)
    if hasattr(config, 'vision_start_token_id'):  # the Qwen formats
        for name in ('vision_start', 'vision_end', 'video_pad'):
            key = 'video_token_id' if name == 'video_pad' else f'{name}_token_id'
            assert getattr(config, key) == tokenizer.convert_tokens_to_ids(f'<|{name}|>')
    # The loader chooses the attention implementation; the saved config does not force one.
    saved = json.loads((model_dir / 'config.json').read_text())
    assert 'attn_implementation' not in json.dumps(saved)


def test_one_image_question_generates(tiny, frame):
    family, _, model, processor = tiny
    inputs = encode(family, processor, [frame])
    runs = image_token_runs(inputs['input_ids'][0], model.config.image_token_id)
    assert [length for _, length in runs] == expected_image_tokens(family, model, inputs)
    if 'image_grid_thw' in inputs:
        assert inputs['image_grid_thw'].tolist() == [patch_grid_640x480(family)]
    prompt_length = inputs['input_ids'].shape[1]
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape[1] > prompt_length
    assert isinstance(processor.batch_decode(output[:, prompt_length:])[0], str)


@pytest.mark.parametrize('tiny', MULTI_IMAGE, indirect=True)
def test_frame_and_crop_give_two_image_blocks_in_order(tiny, frame, crop):
    family, _, model, processor = tiny
    inputs = encode(family, processor, [frame, crop])
    runs = image_token_runs(inputs['input_ids'][0], model.config.image_token_id)
    expected = expected_image_tokens(family, model, inputs)
    assert [length for _, length in runs] == expected
    assert len(runs) >= 2  # one run per image (or per view of an image, for tiled families)
    if 'image_grid_thw' in inputs:
        # Each block sits between its own vision start and end tokens.
        ids = inputs['input_ids'][0]
        for start, length in runs:
            assert ids[start - 1] == model.config.vision_start_token_id
            assert ids[start + length] == model.config.vision_end_token_id
        assert inputs['image_grid_thw'][0].tolist() == patch_grid_640x480(family)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape[1] > inputs['input_ids'].shape[1]


@pytest.mark.parametrize('tiny', MULTI_IMAGE, indirect=True)
def test_chat_templates_render_the_real_prompt_formats(tiny):
    family, _, _, processor = tiny
    prompt = processor.apply_chat_template(user_message(2), add_generation_prompt=True)
    assert prompt == recipe(family).TWO_IMAGE_PROMPT.format(question=QUESTION)


def test_same_seed_gives_identical_weights_and_tokenizer(tmp_path):
    first = make_tiny_model('llava', tmp_path / 'a', seed=0)
    second = make_tiny_model('llava', tmp_path / 'b', seed=0)
    other = make_tiny_model('llava', tmp_path / 'c', seed=1)
    weights = [load_file(d / 'model.safetensors') for d in (first, second, other)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    # A different seed changes the random (not the constant-initialised) tensors.
    changed = [name for name in weights[0] if not torch.equal(weights[0][name], weights[2][name])]
    assert any(name.endswith('q_proj.weight') for name in changed)
    assert (first / 'tokenizer.json').read_text() == (second / 'tokenizer.json').read_text()


def test_building_leaves_the_callers_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny_model('instructblip', tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'blip3'; expected one of"):
        make_tiny_model('blip3', tmp_path)


@pytest.mark.parametrize('name', sorted(PRESETS))
def test_benchmark_presets_have_their_checkpoints_token_layout(name, frame):
    """A benchmark size gives a 640x480 frame as many image tokens as its checkpoint does."""
    family, size = PRESETS[name]
    family_recipe = recipe(family)
    _, config, processor = family_recipe.build(size)
    inputs = encode(family, processor, [frame])
    image_token = getattr(config, 'image_token_id', None) or config.image_token_index
    runs = image_token_runs(inputs['input_ids'][0], image_token)
    expected = family_recipe.IMAGE_TOKENS_640x480[size]
    assert sum(length for _, length in runs) == expected
    assert sum(family_recipe.image_token_runs(config, inputs)) == expected
