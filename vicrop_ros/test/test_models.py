"""Model adapters on tiny random models of the real classes: exactness, maps, geometry, chain."""

import json

import numpy as np
import pytest
from sample_data import FAMILIES, random_image
import torch

from vicrop_ros.core import Box, SaliencyMap, Vicrop, VicropConfig, project_to_image, select_box
from vicrop_ros.core.config import Method
from vicrop_ros.core.saliency import safe_ratio
from vicrop_ros.models.attention import AttentionProbe, probing
from vicrop_ros.models.base import CHECKPOINT_LAYER_KEY, Forward
from vicrop_ros.models.loader import load_model

pytestmark = pytest.mark.slow
QUESTION = 'What does the small label say?'


def eager_twin(adapter, model_dir):
    """Load the same weights with eager attention everywhere, as a second adapter."""
    eager = adapter.transformers_class().from_pretrained(model_dir, attn_implementation='eager')
    return type(adapter)(adapter.name, eager, adapter.processor)


def eager_attention_rows(adapter, inputs, layer: int, config) -> tuple[torch.Tensor, Forward]:
    """Eager attention of every row's last prompt position at ``layer``: (batch, heads, keys)."""
    captured = []
    attention = adapter.decoder_layers[layer].self_attn
    hook = attention.register_forward_hook(lambda module, args, out: captured.append(out[1]))
    run = Forward()
    try:
        with torch.no_grad():
            adapter.forward(inputs, run, config)
    finally:
        hook.remove()
    weights = captured[0]  # (batch, heads, queries, keys)
    rows = adapter.last_rows(inputs)
    return weights[torch.arange(weights.shape[0]), :, rows], run


@pytest.mark.parametrize('family', FAMILIES)
def test_probe_equals_eager_attention_for_question_and_generic(family, tiny_model, tiny_model_dir):
    adapter = tiny_model(family)
    eager = eager_twin(adapter, tiny_model_dir(family))
    config = VicropConfig()
    prepared = adapter.prepare(random_image(640, 480))
    inputs = prepared._encoded((QUESTION, config.generic_question), config)
    assert not torch.equal(inputs['input_ids'][0], inputs['input_ids'][1])
    for layer in sorted({0, adapter.attention_layer(config), len(adapter.decoder_layers) - 1}):
        probe = AttentionProbe(adapter.decoder_layers[layer].self_attn, adapter.last_rows(inputs))
        probe.stop = True
        with torch.no_grad(), probing(probe):
            adapter.forward(inputs, Forward(), config)
        expected, _ = eager_attention_rows(eager, inputs, layer, config)
        assert probe.weights.shape == expected.shape  # (2, heads, keys)
        torch.testing.assert_close(probe.weights, expected.float(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('family', FAMILIES)
def test_rel_att_map_is_the_ratio_of_eager_maps(family, tiny_model, tiny_model_dir):
    """
    Build the map by hand from eager attention and compare.

    Image-token attention (times the Q-Former's query->patch attention for InstructBLIP),
    question over generic question.
    """
    adapter = tiny_model(family)
    eager = eager_twin(adapter, tiny_model_dir(family))
    config = VicropConfig()
    prepared = adapter.prepare(random_image(640, 480, seed=3))
    inputs = prepared._encoded((QUESTION, config.generic_question), config)
    rows, run = eager_attention_rows(eager, inputs, adapter.attention_layer(config), config)
    maps = []
    for row in range(2):
        image_positions = inputs['input_ids'][row] == adapter.image_token_id
        per_token = rows[row][:, image_positions].mean(dim=0)  # head mean over image tokens
        if family == 'instructblip':
            assert per_token.shape == (32,)  # the LM sees the 32 Q-Former queries
            cross = run.token_to_patch[row][:, :, 1:].mean(dim=0)  # (32 queries, 256 patches)
            assert cross.shape == (32, 256)
            per_token = per_token @ cross
        maps.append(adapter.token_grid(per_token, inputs, row, inputs['input_ids'][row]))
    expected = safe_ratio(maps[0], maps[1], config.epsilon).numpy()
    actual = prepared.saliency(QUESTION, config)
    np.testing.assert_allclose(actual.values, expected, rtol=1e-4, atol=1e-6)
    assert actual.extent == prepared.extent


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('method', ['grad_att', 'pure_grad'])
def test_gradient_maps_are_finite_and_informative(family, method, tiny_model):
    result = Vicrop(tiny_model(family))(random_image(640, 480, seed=5), QUESTION, method=method)
    values = result.maps[0].values
    assert np.isfinite(values).all() and (values >= 0).all()
    assert values.max() > values.min()
    assert result.box.is_inside(640, 480)


def test_grad_att_equals_eager_autograd(tiny_model, tiny_model_dir):
    """The leaf trick gives the same d(decision)/d(attention row) as autograd through eager."""
    adapter = tiny_model('llava')
    eager = eager_twin(adapter, tiny_model_dir('llava'))
    config = VicropConfig(method=Method.GRAD_ATT)
    prepared = adapter.prepare(random_image(640, 480, seed=9))
    fast = prepared.saliency(QUESTION, config).values
    prompt = adapter.prompt(adapter.format_question(QUESTION, config), 1)
    inputs = adapter.encode([[prepared.view]], [prompt])
    layer = adapter.attention_layer(config)
    captured = []
    attention = eager.decoder_layers[layer].self_attn
    hook = attention.register_forward_hook(lambda module, args, out: captured.append(out[1]))
    embeds = eager.model.get_input_embeddings()(inputs['input_ids']).requires_grad_(True)
    try:
        with torch.enable_grad():
            hidden = eager.model.model(
                inputs_embeds=embeds,
                pixel_values=inputs['pixel_values'],
                attention_mask=inputs['attention_mask'],
                input_ids=None,
            ).last_hidden_state
            rows = eager.last_rows(inputs)
            decision = eager.decisions(hidden, rows).sum()
            (gradient,) = torch.autograd.grad(decision, captured[0])
    finally:
        hook.remove()
    last = int(rows[0])
    weights, grads = captured[0][0, :, last].detach(), gradient[0, :, last]
    per_token = (weights * grads.clamp(min=0)).mean(dim=0)
    positions = inputs['input_ids'][0] == adapter.image_token_id
    expected = per_token[positions].reshape(24, 24).numpy()
    np.testing.assert_allclose(fast, expected, rtol=1e-3, atol=1e-9)


def hot_spot_image(width, height, x, y, radius=6):
    image = np.full((height, width, 3), 40, np.uint8)
    image[Box(x - radius, y - radius, x + radius, y + radius).slices()] = (255, 255, 255)
    return image


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('size', [(640, 480), (360, 800)])
def test_hot_spot_maps_back_through_the_real_preprocessing(family, size, tiny_model):
    """A hot cell found in the processor's own output maps back onto the source hot spot."""
    adapter = tiny_model(family)
    width, height = size
    x, y = int(width * 0.8), int(height * 0.25)
    prepared = adapter.prepare(hot_spot_image(width, height, x, y))
    inputs = adapter.encode([[prepared.view]], [adapter.prompt('q', 1)])
    pixels = adapter.pixel_images(inputs, inputs['pixel_values'])[0].float()  # (C, H, W)
    brightness = pixels.mean(dim=0)
    rows, cols = (side // adapter.patch_size for side in brightness.shape)  # the patch grid
    cell_h, cell_w = brightness.shape[0] / rows, brightness.shape[1] / cols
    low, high = float(brightness.min()), float(brightness.max())
    spot_y, spot_x = np.nonzero((brightness > (low + high) / 2).numpy())
    peak_y, peak_x = spot_y.mean(), spot_x.mean()  # the spot's centre as the processor shows it
    values = np.zeros((rows, cols), np.float32)
    values[int(peak_y // cell_h), int(peak_x // cell_w)] = 1.0
    grid = project_to_image([SaliencyMap(values, prepared.extent)], size)
    box = select_box(grid, size, adapter.input_size)
    assert box.contains(x, y), (box, (x, y))


def test_centre_crop_geometry_of_the_stock_llava_processor(tiny_model):
    """llava-hf's processor centre-crops; centre_crop_extent maps its grid back correctly."""
    from vicrop_ros.core.geometry import centre_crop_extent

    adapter = tiny_model('llava')
    processor = adapter.processor.image_processor
    size = (800, 450)
    x, y = 520, 300
    pixels = processor(hot_spot_image(*size, x, y), return_tensors='pt')['pixel_values'][0]
    brightness = pixels.mean(dim=0)
    side = brightness.shape[0] // 24
    low, high = float(brightness.min()), float(brightness.max())
    spot_y, spot_x = np.nonzero((brightness > (low + high) / 2).numpy())
    peak_y, peak_x = spot_y.mean(), spot_x.mean()  # the spot's centre as the processor shows it
    values = np.zeros((24, 24), np.float32)
    values[int(peak_y // side), int(peak_x // side)] = 1.0
    crop_size = (processor.crop_size['width'], processor.crop_size['height'])
    extent = centre_crop_extent(size, processor.size['shortest_edge'], crop_size)
    box = select_box(project_to_image([SaliencyMap(values, extent)], size), size, 336)
    assert box.contains(x, y)


def test_forced_attention_puts_its_region_into_the_crop_the_model_sees(tiny_model):
    """Map -> box -> crop -> second image of the final prompt, with attention forced on a patch."""
    base = tiny_model('llava')
    width, height = 1600, 1200
    region = (1240, 180, 1300, 240)  # a red square, far from the centre

    class ForcedAttention(type(base)):
        def token_maps(self, inputs, per_token, token_to_patch, key_ids=None):
            maps = super().token_maps(inputs, per_token, token_to_patch, key_ids)
            prepared = forced_prepared[-1]
            x0, y0, x1, y1 = prepared.extent
            cx, cy = (region[0] + region[2]) / 2, (region[1] + region[3]) / 2
            col = int((cx - x0) / (x1 - x0) * 24)
            row = int((cy - y0) / (y1 - y0) * 24)
            forced = torch.ones_like(maps[0])
            forced[row, col] = 100.0
            return [forced, torch.ones_like(maps[1])]  # question row hot, generic row flat

    adapter = ForcedAttention(base.name, base.model, base.processor)
    forced_prepared = []
    original_prepare = adapter.prepare

    def recording_prepare(image):
        forced_prepared.append(original_prepare(image))
        return forced_prepared[-1]

    adapter.prepare = recording_prepare
    seen = {}
    original_generate = adapter.model.generate

    def recording_generate(**kwargs):
        seen.update(kwargs)
        return original_generate(**kwargs)

    adapter.model.generate = recording_generate
    shown = []  # pixel values of every image the vision tower encodes, in order

    def record_pixels(module, args, kwargs):
        shown.append(args[0] if args else kwargs['pixel_values'])

    hook = base.model.model.vision_tower.register_forward_pre_hook(record_pixels, with_kwargs=True)
    image = np.full((height, width, 3), 90, np.uint8)
    image[Box(*region).slices()] = (255, 0, 0)
    try:
        result = Vicrop(adapter)(image, QUESTION, method='rel_att', tile_threshold=2048)
    finally:
        del adapter.model.generate
        hook.remove()
    assert result.box.contains(region[0], region[1])
    assert result.box.contains(region[2] - 1, region[3] - 1)
    assert result.box.width < width / 2
    # The original image is encoded once, for the shared prefix; then the crop, for the answer.
    assert len(shown) == 2 and [len(pixels) for pixels in shown] == [1, 1]
    crop_pixels = shown[1][0]  # (3, 336, 336)
    original = forced_prepared[-1]
    original_pixels = adapter.encode([[original.view]], [adapter.prompt('q', 1)])['pixel_values'][
        0
    ]
    mean = torch.tensor(base.processor.image_processor.image_mean)[:, None, None]
    std = torch.tensor(base.processor.image_processor.image_std)[:, None, None]

    def red_share(pixels):
        rgb = (pixels * std + mean).clamp(0, 1)
        return ((rgb[0] > 0.9) & (rgb[1] < 0.1) & (rgb[2] < 0.1)).float().mean()

    assert red_share(crop_pixels) > 3 * red_share(original_pixels) > 0  # zoomed in on the region
    assert int((seen['input_ids'] == base.image_token_id).sum()) == 2 * 576


def test_large_images_get_a_map_per_tile(tiny_model):
    result = Vicrop(tiny_model('llava'))(random_image(2200, 700), QUESTION)
    assert len(result.maps) == 3
    assert [m.extent[0] for m in result.maps] == sorted(m.extent[0] for m in result.maps)
    assert result.saliency.shape[1] > result.saliency.shape[0]
    assert result.box.is_inside(2200, 700)


def test_stages_are_reported_in_order(tiny_model):
    stages = []
    Vicrop(tiny_model('qwen2_5_vl'))(random_image(320, 240), QUESTION, on_stage=stages.append)
    assert stages == ['saliency', 'cropping', 'answering']
    stages.clear()
    Vicrop(tiny_model('qwen2_5_vl'))(
        random_image(320, 240), QUESTION, stages.append, method='none'
    )
    assert stages == ['answering']


def test_bad_requests_raise_clear_errors(tiny_model, tmp_path):
    vicrop = Vicrop(tiny_model('llava'))
    with pytest.raises(ValueError, match='question is empty'):
        vicrop(random_image(64, 64), '   ')
    with pytest.raises(ValueError, match='HxWx3'):
        vicrop(np.zeros((10, 10), np.uint8), QUESTION)
    with pytest.raises(ValueError, match='unknown method'):
        vicrop(random_image(64, 64), QUESTION, method='sharpest')
    with pytest.raises(ValueError, match='attention_layer 99 is out of range'):
        vicrop(random_image(64, 64), QUESTION, attention_layer=99)
    with pytest.raises(ValueError, match='not a directory'):
        load_model(str(tmp_path / 'missing'))
    (tmp_path / 'config.json').write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="unsupported model type 'bert'"):
        load_model(str(tmp_path))


def test_a_checkpoint_names_its_own_attention_layer_and_a_configured_one_wins(
    tiny_model, tiny_model_dir, tmp_path
):
    adapter = tiny_model('llava')
    chosen = (adapter.attention_layer(VicropConfig()) + 1) % len(adapter.decoder_layers)
    source = tiny_model_dir('llava')
    config = json.loads((source / 'config.json').read_text())
    for item in source.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    (tmp_path / 'config.json').write_text(json.dumps(config | {CHECKPOINT_LAYER_KEY: chosen}))
    named = load_model(str(tmp_path), device='cpu')
    assert named.attention_layer(VicropConfig()) == chosen
    assert named.attention_layer(VicropConfig(attention_layer=0)) == 0
    (tmp_path / 'config.json').write_text(json.dumps(config | {CHECKPOINT_LAYER_KEY: 99}))
    with pytest.raises(ValueError, match='attention_layer 99 is out of range'):
        load_model(str(tmp_path), device='cpu').attention_layer(VicropConfig())


def test_llava_pads_usual_frames_as_they_are_and_shrinks_a_thin_strip_first(tiny_model):
    from vicrop_ros.core.geometry import pad_to_square

    llava = tiny_model('llava')
    frame = random_image(128, 72, seed=31)
    view, extent = llava.model_view(frame)
    mean = tuple(int(round(255 * m)) for m in llava.processor.image_processor.image_mean)
    plain, plain_extent = pad_to_square(frame, mean)
    np.testing.assert_array_equal(view, plain)
    assert extent == plain_extent
    strip = random_image(20000, 20, seed=32)
    view, extent = llava.model_view(strip)
    side = 2 * llava.input_size
    assert view.shape == (side, side, 3)  # not 20000x20000
    x0, y0, x1, y1 = extent
    assert (x0, x1) == (0.0, 20000.0)  # the long axis fills the square
    # The padded axis, in source pixels: the square's one row of picture maps back onto the
    # strip's 20 rows, and the fill above and below it onto the outside of the strip.
    rows = np.flatnonzero((view != np.array(mean, dtype=view.dtype)).any(axis=(1, 2)))
    assert len(rows) == 1
    per_row = (y1 - y0) / side
    assert (y0 + rows[0] * per_row, y0 + (rows[0] + 1) * per_row) == pytest.approx((0.0, 20.0))


def _language_model_prompt_length(model, family, views, question, config) -> int:
    """Tokens the language model reads for the answer prompt, from the processor's own output."""
    if family == 'instructblip':  # one image per processor row; the rest prepended as queries
        prompt = model.prompt(model.format_question(question, config), 1)
        ids = model.encode([views[:1]], [prompt])['input_ids']
        return ids.shape[1] + (len(views) - 1) * model.query_tokens
    prompt = model.prompt(model.format_question(question, config), len(views))
    return model.encode([views], [prompt])['input_ids'].shape[1]


@pytest.mark.parametrize('family', FAMILIES)
def test_the_context_check_counts_the_answer_prompt_as_the_processor_builds_it(family, tiny_model):
    model = tiny_model(family)
    config = VicropConfig()
    frame = random_image(96, 64, seed=41)
    view = model.model_view(frame)[0]
    question = 'What does the small label on the left say?'
    counted = model.answer_prompt_tokens(question, (96, 64), config)
    assert counted == _language_model_prompt_length(model, family, [view, view], question, config)
    # The answer's tokens fill the context exactly, then one more is over it.
    room = model.context_length - counted
    assert model.question_problem(question, (96, 64), VicropConfig(max_new_tokens=room)) == ''
    problem = model.question_problem(question, (96, 64), VicropConfig(max_new_tokens=room + 1))
    assert f'its prompt would be {counted} tokens' in problem


def test_a_question_beyond_the_context_is_refused_before_any_model_work(tiny_model):
    from vicrop_ros.core import BadQuestion

    model = tiny_model('llava')
    question = '\U0001f916' * 2000  # 2000 characters; each a few byte-level tokens
    assert model.answer_prompt_tokens(question, (64, 48), VicropConfig()) > model.context_length
    with pytest.raises(BadQuestion, match='too long for the model'):
        Vicrop(model)(random_image(64, 48, seed=42), question)


def test_instructblip_also_checks_the_question_against_the_q_formers_positions(tiny_model):
    model = tiny_model('instructblip')
    limit = model.model.config.qformer_config.max_position_embeddings
    question = ' '.join(['label'] * limit)  # one or more Q-Former tokens a word
    assert model.answer_prompt_tokens(question, (64, 48), VicropConfig()) < model.context_length
    problem = model.question_problem(question, (64, 48), VicropConfig())
    assert f'over its {limit} positions' in problem


def test_smolvlm_tiles_sit_in_the_mosaic_where_their_pixels_are(tiny_model):
    """
    The tile views, laid out by pixel_images, rebuild the frame; token_grid uses the same order.

    The frame is a red x-ramp and a green y-ramp: a tile out of place breaks the ramps.
    """
    adapter = tiny_model('smolvlm')
    width, height = 640, 480
    ramps = np.zeros((height, width, 3), np.uint8)
    ramps[:, :, 0] = np.linspace(0, 255, width)[None, :]
    ramps[:, :, 1] = np.linspace(0, 255, height)[:, None]
    prepared = adapter.prepare(ramps)
    inputs = prepared._encoded((QUESTION,), VicropConfig())
    ids = inputs['input_ids'][0]
    rows, cols = adapter.tile_layout(ids)
    assert rows * cols >= 2, 'the test needs a frame split into several tiles'
    mosaic = adapter.pixel_images(inputs, inputs['pixel_values'])[0].float()  # (C, R*H, C*W)
    x_ramp = torch.arange(mosaic.shape[2], dtype=torch.float32)[None, :].expand(mosaic.shape[1:])
    y_ramp = torch.arange(mosaic.shape[1], dtype=torch.float32)[:, None].expand(mosaic.shape[1:])
    for channel, ramp in ((0, x_ramp), (1, y_ramp)):
        correlation = torch.corrcoef(torch.stack([mosaic[channel].flatten(), ramp.flatten()]))
        assert correlation[0, 1] > 0.99, (channel, correlation[0, 1])
    # Tile k's tokens carry k (the global view 0): token_grid puts k at block (k // C, k % C).
    side = adapter.tile_side
    count = int((ids == adapter.image_token_id).sum())
    values = torch.zeros(count)
    values[: rows * cols * side * side] = torch.arange(rows * cols).repeat_interleave(side * side)
    grid = adapter.token_grid(values, inputs, 0, ids)
    expected = torch.arange(rows * cols, dtype=torch.float32).reshape(rows, cols)
    expected = expected.repeat_interleave(side, 0).repeat_interleave(side, 1)
    torch.testing.assert_close(grid, expected)
