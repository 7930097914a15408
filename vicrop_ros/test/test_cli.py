"""``vicrop ask`` and ``vicrop make-tiny-model`` on every family and method."""

import json
import subprocess

import cv2
import pytest
from sample_data import FAMILIES, random_image

from vicrop_ros import cli
from vicrop_ros.core.config import Method
from vicrop_ros.testing.tiny import recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('images') / 'frame.png'
    cv2.imwrite(str(path), random_image(640, 480, seed=11))
    return path


def run_cli(capsys, *args) -> dict:
    assert cli.main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('method', [method.value for method in Method])
def test_ask_json_for_every_family_and_method(family, method, tiny_model_dir, image_file, capsys):
    report = run_cli(
        capsys, 'ask', '--model', str(tiny_model_dir(family)), '--image', str(image_file),
        '--question', 'What is written on the label?', '--method', method, '--device', 'cpu',
        '--max-new-tokens', '4', '--json',
    )  # fmt: skip
    assert isinstance(report['answer'], str)
    assert report['method'] == method
    assert report['image_size'] == [640, 480]
    assert set(report['timings_ms']) == {'prepare', 'saliency', 'crop', 'answer', 'total'}
    if method == 'none':
        assert report['box'] is None and report['grid'] is None
        return
    x0, y0, x1, y1 = report['box']
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    kind = 'pure_grad' if method == 'pure_grad' else 'attention'
    assert report['grid'] == list(recipe(family).MAP_GRIDS_640x480[kind])  # the recipe's facts


def test_console_script_writes_a_saliency_image(tiny_model_dir, image_file, tmp_path):
    overlay = tmp_path / 'saliency.png'
    result = subprocess.run(
        ['vicrop', 'ask', '--model', str(tiny_model_dir('llava')), '--image', str(image_file),
         '--question', 'Which colour is the cap?', '--saliency-out', str(overlay)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert 'answer: ' in result.stdout and 'grid (rows x cols): 24x24' in result.stdout
    written = cv2.imread(str(overlay))
    assert written.shape == (480, 640, 3)


@pytest.mark.parametrize(
    ('arguments', 'message'),
    [
        (['--image', 'missing.png'], 'image file not found: missing.png'),
        (['--model', '/nonexistent/model'], "model path '/nonexistent/model' is not a directory"),
        (['--method', 'sharpest'], "invalid choice: 'sharpest'"),
    ],
)
def test_ask_errors_are_clear(arguments, message, tiny_model_dir, image_file, capsys):
    defaults = {'--model': str(tiny_model_dir('llava')), '--image': str(image_file)}
    defaults.update(dict(zip(arguments[::2], arguments[1::2], strict=True)))
    argv = ['ask', '--question', 'q'] + [item for pair in defaults.items() for item in pair]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_ask_rejects_an_unsupported_model(tmp_path, image_file, capsys):
    (tmp_path / 'config.json').write_text('{"model_type": "bert"}')
    with pytest.raises(SystemExit):
        cli.main(['ask', '--model', str(tmp_path), '--image', str(image_file), '--question', 'q'])
    assert "unsupported model type 'bert'" in capsys.readouterr().err


def test_make_tiny_model_writes_a_loadable_directory(tmp_path, capsys):
    assert cli.main(['make-tiny-model', '--family', 'instructblip', '--out', str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path)
    assert (tmp_path / 'config.json').is_file() and (tmp_path / 'model.safetensors').is_file()
