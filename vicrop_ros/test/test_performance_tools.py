"""The performance scripts run and report their figures (speed is measured by them, not here)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def run_json(command, timeout=300) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bench_reports_every_method_with_its_ratios(tiny_model_dir):
    figures = run_json(['vicrop', 'bench', '--model', str(tiny_model_dir('llava')), '--repeats',
                        '1', '--warmup', '0', '--images', '1', '--size', '320x240',
                        '--max-new-tokens', '2', '--device', 'cpu', '--json'])  # fmt: skip
    assert set(figures['methods']) == {'rel_att', 'grad_att', 'pure_grad'}
    for entry in figures['methods'].values():
        for key in ('prepare_ms', 'saliency_ms', 'crop_ms', 'answer_ms', 'total_ms',
                    'plain_one_image_ms', 'plain_two_image_ms', 'reference_ms'):  # fmt: skip
            assert entry[key] > 0, key
        expected = entry['reference_ms'] / entry['total_ms']
        assert entry['speedup_vs_reference'] == pytest.approx(expected, rel=0.01)
        work = entry['prepare_ms'] + entry['answer_ms']
        expected = (entry['saliency_ms'] + entry['crop_ms']) / work
        assert entry['overhead_ratio'] == pytest.approx(expected, rel=0.01)
    assert figures['parameters_m'] < 1 and figures['device'] == 'cpu'


def test_bench_batch_times_questions_alone_in_turn_and_batched(tiny_model_dir):
    model = str(tiny_model_dir('llava'))
    figures = run_json(['vicrop', 'bench', '--model', model, '--batch', '3', '--methods',
                        'rel_att,none', '--repeats', '1', '--warmup', '0', '--images', '1',
                        '--size', '320x240', '--max-new-tokens', '2', '--json'])  # fmt: skip
    assert figures['batch'] == 3 and set(figures['methods']) == {'rel_att', 'none'}
    for entry in figures['methods'].values():
        assert min(entry['one_ms'], entry['one_by_one_ms'], entry['batched_ms']) > 0
        expected = entry['batched_ms'] / entry['one_ms']
        assert entry['batched_vs_one'] == pytest.approx(expected, rel=0.01)
    command = ['vicrop', 'bench', '--model', model, '--batch', '99']
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and '--batch must be 1 to 8' in result.stderr


def test_reference_pipeline_finds_the_same_box_and_answer_as_vicrop(tiny_model):
    """The bench compares like with like: the reference-style run computes what ViCrop does."""
    from vicrop_ros.bench import QUESTION, bench_images, load_eager_twin, reference_answer
    from vicrop_ros.core import Vicrop, VicropConfig

    model = tiny_model('llava')
    eager = load_eager_twin(model)
    recorded = []  # whether each full pass of the eager twin recorded an autograd graph
    hook = eager.output_head.register_forward_hook(
        lambda module, args, output: recorded.append(output.requires_grad)
    )
    config = VicropConfig(max_new_tokens=3)
    try:
        for image in bench_images(3, (400, 300)):
            recorded.clear()
            answer, box = reference_answer(eager, image, QUESTION, config)
            ours = Vicrop(model, config)(image, QUESTION, method='rel_att')
            assert box == ours.box
            assert answer == ours.answer
            # Two attention passes with the graph over the parameters; answers without it.
            assert recorded[:2] == [True, True] and not any(recorded[2:])
    finally:
        hook.remove()
    assert all(parameter.requires_grad for parameter in eager.model.parameters())
    assert not any(parameter.requires_grad for parameter in model.model.parameters())


def test_gpu_bench_runs_on_the_cpu_with_a_tiny_model():
    figures = run_json([sys.executable, '-m', 'vicrop_ros.gpu_bench', '--size', 'tiny',
                        '--device', 'cpu', '--dtype', 'float32', '--repeats', '2',
                        '--warmup', '1', '--json'])  # fmt: skip
    assert set(figures['rows']) == {
        'plain one-image answer',
        'plain two-image answer',
        'vicrop rel_att',
        'vicrop grad_att',
        'vicrop pure_grad',
    }
    assert all(
        row['p50_ms'] > 0 and row['p95_ms'] >= row['p50_ms'] for row in figures['rows'].values()
    )


@pytest.mark.dds
def test_idle_cpu_script_reports_the_node_cpu(tiny_model_dir):
    figures = run_json(['vicrop-idle-cpu', '--seconds', '2', '--head', '640x360', '--json',
                        '--model', str(tiny_model_dir('llava'))])  # fmt: skip
    assert figures['node_cpu_pct_of_one_core'] >= 0 and figures['window_s'] >= 2


@pytest.mark.dds
def test_dds_latency_script_compares_the_profiles():
    figures = run_json(['vicrop-dds-latency', '--seconds', '1', '--size', '320x240', '--json'])
    assert len(figures['rows']) == 4
    for row in figures['rows'].values():
        assert row['sent'] == 30 and 0 <= row['received'] <= 30


def test_the_fleet_load_test_gives_each_robot_its_cameras_and_a_share_of_the_queue():
    import yaml

    from vicrop_interfaces.msg import Answer
    from vicrop_ros.ros import fleet_load_test
    from vicrop_ros.ros.params import cameras_problem

    document = yaml.safe_load(fleet_load_test.fleet_parameters(robots=4, max_pending=16,
                                                               max_batch=1))  # fmt: skip
    values = document['/**']['ros__parameters']
    assert values['max_batch'] == 1
    assert values['cameras'][:3] == ['r1_head', 'r1_wrist', 'r2_head']
    assert len(values['cameras']) == 8 and cameras_problem(values['cameras']) is None
    assert values['r3_wrist'] == {'topic': '/r3/wrist_camera/image_raw'}
    assert values['max_pending_per_camera'] == 2  # one robot holds at most 4 of the 16
    sent = {f'balanced-r2-{i}': ('balanced', 2, 10.0 + i) for i in range(3)}
    sent['skewed-r2-0'] = ('skewed', 2, 13.0)
    answers = {'balanced-r2-0': [(Answer(status=Answer.OK), 10.5)],
               'balanced-r2-1': [(Answer(status=Answer.BUSY, error='full'), 11.0)]}  # fmt: skip
    figures = fleet_load_test.robot_figures(sent, answers, 'balanced', 2)
    assert figures == {'asked': 3, 'answered': 2, 'busy': 1, 'ok_p50_ms': 500.0,
                       'ok_p95_ms': 500.0}  # fmt: skip
    # one OK answer of the balanced phase, 0.5 s after it began at 10.0: 2 per second
    assert fleet_load_test.phase_throughput(sent, answers, 'balanced', 10.0) == 2.0
    assert fleet_load_test.phase_throughput(sent, answers, 'skewed', 13.0) is None
