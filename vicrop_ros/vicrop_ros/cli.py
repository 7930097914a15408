"""
``vicrop``: the command line of the ViCrop engine (no ROS needed).

Subcommands:

* ``vicrop ask``: answer a question about an image file with ViCrop.
* ``vicrop make-tiny-model``: write a tiny random model of a supported family (tests, demos).
* ``vicrop bench``: time ViCrop against plain answers and the reference-style pipeline.
* ``vicrop eval``: score answers with and without crops on a question set (VQA accuracy).
* ``vicrop train-demo-model``: train the small demo model on synthetic scenes (CPU, about 1 h).
* ``vicrop info``: versions of the engine's libraries and the compute devices torch can use.

Errors (missing file, unknown method, unsupported model) print ``vicrop: error: ...`` and exit 2.
"""

import argparse
import json
import os
from pathlib import Path
import platform
import sys

from .testing import MODEL_NAMES as TINY_MODELS


class UsageError(Exception):
    """A problem with the command's input, reported as ``vicrop: error: ...`` (exit 2)."""


def _info(args: argparse.Namespace) -> int:
    """Print library versions and available devices (a robot's first check that CUDA works)."""
    import torch
    import transformers

    import vicrop_ros

    cuda = torch.cuda.is_available()
    report = {
        'vicrop_ros': vicrop_ros.__version__,
        'python': platform.python_version(),
        'torch': torch.__version__,
        'transformers': transformers.__version__,
        'cuda_available': cuda,
        'cuda_devices': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f'{key}: {value}')
    return 0


def _read_rgb(path: Path):
    """Return the image file at ``path`` as HWC uint8 RGB; UsageError saying why not."""
    from .evaluation.evaluate import read_rgb

    try:
        return read_rgb(path)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _load_model(args: argparse.Namespace):
    """Load ``--model`` with the loading options of ``ask`` and ``bench`` (ValueError if not)."""
    from .models.loader import load_model

    return load_model(
        args.model, device=args.device, dtype=args.dtype, allow_download=args.allow_download,
        pixel_budget=(args.min_pixels, args.max_pixels),
    )  # fmt: skip


def _add_loading_arguments(command: argparse.ArgumentParser) -> None:
    """Add the model-loading options (the node's parameters of the same names)."""
    command.add_argument(
        '--device', default='auto', help="'auto' (CUDA if available), 'cpu', 'cuda:N'"
    )
    command.add_argument(
        '--dtype', default='auto', help="'auto', 'float32', 'bfloat16', 'float16'"
    )
    command.add_argument(
        '--allow-download', action='store_true',
        help='download a model id missing from the local Hugging Face cache',
    )  # fmt: skip
    command.add_argument(
        '--min-pixels', type=int, default=0, help="Qwen: fewest pixels per image (0: checkpoint's)"
    )
    command.add_argument(
        '--max-pixels', type=int, default=0, help="Qwen: most pixels per image (0: checkpoint's)"
    )


def _ask(args: argparse.Namespace) -> int:
    """Answer one question about one image file and print the result."""
    image = _read_rgb(Path(args.image))
    from .core import Vicrop, VicropConfig

    try:
        config = VicropConfig(method=args.method, max_new_tokens=args.max_new_tokens)
        model = _load_model(args)
        result = Vicrop(model, config)(image, args.question)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.saliency_out:
        import cv2

        from .visualize import saliency_overlay

        cv2.imwrite(args.saliency_out, saliency_overlay(image, result.saliency, result.box))
    grid = list(result.maps[0].grid) if result.maps else None
    report = {
        'answer': result.answer,
        'box': list(result.box.as_xyxy()) if result.box else None,
        'score': result.score,
        'grid': grid,
        'method': result.method.value,
        'model': args.model,
        'image_size': [int(image.shape[1]), int(image.shape[0])],
        'timings_ms': {stage: round(ms, 2) for stage, ms in result.timings_ms.items()},
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f'answer: {result.answer}')
    print(f'method: {report["method"]}')
    print(f'box (x0 y0 x1 y1): {report["box"]}  score: {result.score:.4g}')
    print(f'grid (rows x cols): {"x".join(map(str, grid)) if grid else None}')
    print('timings (ms): ' + ', '.join(f'{k} {v}' for k, v in report['timings_ms'].items()))
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Time ViCrop against plain answers and the reference-style pipeline; print the figures."""
    import platform

    from .bench import (
        bench_images,
        format_batch_table,
        format_table,
        load_eager_twin,
        run_batch_bench,
        run_bench,
    )

    try:
        model = _load_model(args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.no_shared_prefix:
        model.shares_prefix = False  # this adapter object only
    width, height = (int(v) for v in args.size.lower().split('x'))
    images = bench_images(args.images, (width, height))
    if args.batch:
        try:
            figures = run_batch_bench(model, args.methods.split(','), images, args.batch,
                                      args.repeats, args.warmup, args.max_new_tokens)  # fmt: skip
        except ValueError as error:
            raise UsageError(str(error)) from None
        format_figures = format_batch_table
    else:
        eager = None if args.no_reference else load_eager_twin(model)
        figures = run_bench(model, eager, args.methods.split(','), images, args.repeats,
                            args.warmup, args.max_new_tokens)  # fmt: skip
        format_figures = format_table
    figures |= {
        'model': args.model,
        'parameters_m': round(sum(p.numel() for p in model.model.parameters()) / 1e6, 1),
        'device': str(model.device),
        'dtype': str(model.model.dtype).replace('torch.', ''),
        'image_size': [width, height],
        'images': args.images,
        'repeats': args.repeats,
        'max_new_tokens': args.max_new_tokens,
        'shared_prefix': model.shares_prefix,
        'machine': f'{platform.machine()}, {os.cpu_count()} CPUs',
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(format_figures(figures))
        extra = {k: v for k, v in figures.items() if k != 'methods'}
        print(' '.join(f'{k}={v}' for k, v in extra.items()))
    return 0


def _eval(args: argparse.Namespace) -> int:
    """Answer a question set under each condition; print the accuracy by target size."""
    import tempfile

    from .core import VicropConfig
    from .evaluation.evaluate import (
        check_conditions,
        evaluate,
        format_summary,
        record_dicts,
        summarize,
    )
    from .evaluation.question_set import load_question_set, write_synthetic_set

    try:
        edges = tuple(int(v) for v in args.buckets.split(','))
        conditions = check_conditions(args.conditions.split(','))
        config = VicropConfig(max_new_tokens=args.max_new_tokens)
        with tempfile.TemporaryDirectory() as scratch:
            if args.synthetic:
                sizes = tuple(int(v) for v in args.sizes.split(','))
                path = write_synthetic_set(scratch, args.synthetic, args.seed, sizes)
            elif args.questions:
                path = Path(args.questions)
            else:
                raise UsageError('give --questions FILE or --synthetic N')
            questions = load_question_set(path, args.images_dir)[: args.limit]
            model = _load_model(args)
            records = evaluate(
                model, questions, conditions, config, _progress_bar(), attention=args.attention
            )
    except ValueError as error:
        raise UsageError(str(error)) from None
    summary = summarize(records, edges) | {'model': args.model}
    if args.records:
        Path(args.records).write_text(json.dumps(record_dicts(records), indent=1))
    if args.plots:
        from .evaluation.plots import write_plots

        for path in write_plots(summary, args.plots):
            print(f'vicrop eval: wrote {path}', file=sys.stderr)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def _progress_bar(width: int = 30):
    """Return ``progress(done, total)``: a bar with the time left on stderr, every 5 %."""
    import time

    start = time.monotonic()

    def progress(done: int, total: int) -> None:
        if done != total and done % max(1, total // 20):
            return
        elapsed = time.monotonic() - start
        left = elapsed / done * (total - done)
        bar = '#' * (width * done // total)
        print(f'vicrop eval: [{bar:<{width}}] {done}/{total} questions, {elapsed:.0f} s, '
              f'about {left:.0f} s left', file=sys.stderr, flush=True)  # fmt: skip

    return progress


def _train_demo_model(args: argparse.Namespace) -> int:
    """Train the demo model from scratch and print its directory."""
    from .evaluation.demo_model import TrainSettings, train_demo_model

    settings = TrainSettings(
        vision_steps=args.vision_steps, steps=args.steps, batch=args.batch, seed=args.seed
    )
    try:
        out = train_demo_model(args.out, settings, lambda line: print(line, file=sys.stderr),
                               args.reading_cache)  # fmt: skip
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(out)
    return 0


def _make_tiny_model(args: argparse.Namespace) -> int:
    """Write a tiny random model and print its directory."""
    from .testing.tiny import make_tiny_model

    print(make_tiny_model(args.family, args.out, seed=args.seed))
    return 0


def _train_defaults():
    """Return the demo model's training settings (the committed model's)."""
    from .evaluation.demo_model import TrainSettings

    return TrainSettings()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``vicrop`` with one subparser per subcommand."""
    from .core.config import Method

    parser = argparse.ArgumentParser(prog='vicrop', description=__doc__.strip().splitlines()[0])
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    ask = commands.add_parser('ask', help='answer a question about an image file')
    ask.add_argument('--model', required=True, help='Hugging Face id or directory')
    ask.add_argument('--image', required=True, help='image file (PNG, JPEG, ...)')
    ask.add_argument('--question', required=True)
    ask.add_argument('--method', choices=[m.value for m in Method], default=Method.REL_ATT.value)
    _add_loading_arguments(ask)
    ask.add_argument('--max-new-tokens', type=int, default=16)
    ask.add_argument('--json', action='store_true', help='print one JSON object')
    ask.add_argument('--saliency-out', metavar='PNG', help='write the heatmap with the box here')
    ask.set_defaults(run=_ask)

    bench = commands.add_parser('bench', help='time ViCrop against plain and reference pipelines')
    bench.add_argument('--model', required=True, help='Hugging Face id or directory')
    bench.add_argument('--methods', default='rel_att,grad_att,pure_grad', help='comma-separated')
    bench.add_argument('--images', type=int, default=2, help='distinct synthetic images')
    bench.add_argument('--size', default='640x480', help='image WIDTHxHEIGHT')
    bench.add_argument('--repeats', type=int, default=3)
    bench.add_argument('--warmup', type=int, default=1)
    bench.add_argument('--max-new-tokens', type=int, default=8)
    _add_loading_arguments(bench)
    bench.add_argument('--no-reference', action='store_true', help='skip the reference pipeline')
    bench.add_argument(
        '--batch', type=int, default=0, metavar='N',
        help='instead: time N questions about one frame, one at a time and as one batch',
    )  # fmt: skip
    bench.add_argument(
        '--no-shared-prefix', action='store_true',
        help='time the path without prefix sharing (the "before" of a before/after ratio)',
    )  # fmt: skip
    bench.add_argument('--json', action='store_true', help='print one JSON object')
    bench.set_defaults(run=_bench)

    evaluation = commands.add_parser(
        'eval', help='score answers with and without crops on a question set (VQA accuracy)'
    )
    evaluation.add_argument('--model', required=True, help='Hugging Face id or directory')
    evaluation.add_argument('--questions', metavar='JSON', help='a TextVQA-format question set')
    evaluation.add_argument(
        '--images-dir', help='where <image_id>.jpg files are (default: images/ beside the set)'
    )
    evaluation.add_argument(
        '--synthetic', type=int, metavar='N', help='instead: N synthetic scenes of --seed'
    )
    evaluation.add_argument('--seed', type=int, default=0, help='synthetic scenes: their seed')
    evaluation.add_argument(
        '--sizes',
        default='14,20,28,40,56,80,112',
        help='synthetic: target sizes in px of a 640x480 frame (1.5 times in 1280x720), in turn',
    )
    evaluation.add_argument(
        '--conditions', default='none,rel_att,grad_att,pure_grad,gt_crop',
        help="comma-separated: 'none' (no crop), methods, 'gt_crop' (the ground-truth box)",
    )  # fmt: skip
    evaluation.add_argument(
        '--buckets',
        default='8,16',
        help='target sizes as the model sees them (px at its input) that start the size buckets',
    )
    evaluation.add_argument('--limit', type=int, help='the first N questions only')
    evaluation.add_argument('--max-new-tokens', type=int, default=8)
    _add_loading_arguments(evaluation)
    evaluation.add_argument('--records', metavar='JSON', help='write every scored answer here')
    evaluation.add_argument(
        '--attention', action='store_true',
        help="also the attention ratio of the ground-truth box per layer ('none' answers)",
    )  # fmt: skip
    evaluation.add_argument('--plots', metavar='DIR', help='write PNG plots of the figures here')
    evaluation.add_argument('--json', action='store_true', help='print one JSON object')
    evaluation.set_defaults(run=_eval)

    train = commands.add_parser(
        'train-demo-model', help='train the small demo model on synthetic scenes (CPU, ~1 h)'
    )
    train.add_argument('--out', required=True, help='directory to write the model to')
    defaults = _train_defaults()
    train.add_argument(
        '--vision-steps', type=int, default=defaults.vision_steps,
        help='steps of the first stage (the vision tower learns to read)',
    )  # fmt: skip
    train.add_argument(
        '--steps', type=int, default=defaults.steps, help='steps of the second stage (answers)'
    )
    train.add_argument('--batch', type=int, default=defaults.batch)
    train.add_argument('--seed', type=int, default=defaults.seed)
    train.add_argument(
        '--reading-cache', metavar='FILE',
        help='take the first stage from FILE if it exists (same settings), else write it there',
    )  # fmt: skip
    train.set_defaults(run=_train_demo_model)

    tiny = commands.add_parser('make-tiny-model', help='write a tiny random model (offline)')
    tiny.add_argument('--family', choices=TINY_MODELS, required=True)
    tiny.add_argument('--out', required=True, help='directory to write')
    tiny.add_argument('--seed', type=int, default=0)
    tiny.set_defaults(run=_make_tiny_model)

    info = commands.add_parser('info', help='library versions and compute devices')
    info.add_argument('--json', action='store_true', help='print one JSON object')
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``vicrop`` with ``argv`` (default: the process arguments); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        parser.exit(2, f'vicrop: error: {error}\n')


if __name__ == '__main__':
    sys.exit(main())
