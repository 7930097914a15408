"""
GPU benchmark: a LLaVA-1.5-7B-shaped model with random bf16 weights, built on the device.

    python -m vicrop_ros.gpu_bench [--size 7b] [--device cuda] [--repeats 20] [--json]

No weights are downloaded: the model is built from its config directly on the device (random
weights of the real architecture size), so the timings are those of the real model's shapes
(answers are meaningless). Prints p50/p95 of the plain one-image answer, the final two-image answer
and each ViCrop method (<= 10 new tokens). ``--size tiny --device cpu`` checks the script anywhere.
Needs only torch and transformers (no ROS): on a machine without a colcon build, run it with
``PYTHONPATH=vicrop_ros``.
"""

import argparse
import json
import time

import numpy as np
import torch

from .bench import QUESTION, bench_images, timed
from .core import Vicrop, VicropConfig, crop
from .models.llava import LlavaAdapter
from .testing.recipes.llava import build as build_llava


def build(size: str, device: torch.device, dtype: torch.dtype) -> LlavaAdapter:
    """Build a random LLaVA-1.5 of ``size`` directly on ``device`` with the probe attention."""
    model_class, config, processor = build_llava(size)
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class._from_config(
            config, dtype=dtype, attn_implementation=LlavaAdapter.attention_implementation
        )
    return LlavaAdapter(f'random LLaVA-1.5 ({size})', model.eval(), processor)


def percentiles(samples: list[float]) -> dict:
    """Return p50 and p95 of ``samples`` (milliseconds), rounded."""
    return {
        'p50_ms': round(float(np.percentile(samples, 50)), 1),
        'p95_ms': round(float(np.percentile(samples, 95)), 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Build, warm up, time, print."""
    parser = argparse.ArgumentParser(prog='gpu_bench', description=__doc__.strip().splitlines()[0])
    parser.add_argument('--size', default='7b', choices=('tiny', 'mid', '7b'))
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float16', 'float32'))
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--max-new-tokens', type=int, default=10)
    parser.add_argument('--methods', default='rel_att,grad_att,pure_grad')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    started = time.perf_counter()
    model = build(args.size, device, dtype)
    build_s = time.perf_counter() - started
    config = VicropConfig(max_new_tokens=args.max_new_tokens)
    vicrop = Vicrop(model, config)
    images = bench_images(4, (1280, 720))

    rows = {}
    plain_one, plain_two = [], []
    for index in range(args.warmup + args.repeats):
        image = images[index % len(images)]
        view = model.model_view(image)[0]
        crop_view = model.model_view(crop(image, vicrop(image, QUESTION).box))[0]
        one, _ = timed(device, model.generate_answer, [view], QUESTION, config)
        two, _ = timed(device, model.generate_answer, [view, crop_view], QUESTION, config)
        if index >= args.warmup:
            plain_one.append(one)
            plain_two.append(two)
    rows['plain one-image answer'] = percentiles(plain_one)
    rows['plain two-image answer'] = percentiles(plain_two)
    for method in args.methods.split(','):
        totals, saliency = [], []
        for index in range(args.warmup + args.repeats):
            image = images[index % len(images)]
            total, result = timed(device, vicrop, image, QUESTION, method=method)
            if index >= args.warmup:
                totals.append(total)
                saliency.append(result.timings_ms['saliency'] + result.timings_ms['crop'])
        rows[f'vicrop {method}'] = percentiles(totals) | {
            'map+box p50_ms': round(float(np.percentile(saliency, 50)), 1)
        }
    figures = {
        'model': model.name,
        'parameters_b': round(sum(p.numel() for p in model.model.parameters()) / 1e9, 2),
        'device': torch.cuda.get_device_name(device) if device.type == 'cuda' else str(device),
        'dtype': args.dtype,
        'image': '1280x720',
        'max_new_tokens': args.max_new_tokens,
        'repeats': args.repeats,
        'build_s': round(build_s, 1),
        'rows': rows,
    }
    if device.type == 'cuda':
        figures['cuda_peak_gb'] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"{figures['model']}, {figures['parameters_b']} B parameters, {figures['device']}, "
              f"{args.dtype}, 1280x720 frames, <= {args.max_new_tokens} new tokens")  # fmt: skip
        for name, row in rows.items():
            print(f'{name:<26}' + '  '.join(f'{k} {v:>8}' for k, v in row.items()))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
