"""
``vicrop``: the command line of the ViCrop engine (no ROS needed).

Subcommands:

* ``vicrop info``: versions of the engine's libraries and the compute devices torch can use.
"""

import argparse
import json
import platform
import sys


def _info(args: argparse.Namespace) -> int:
    """Print library versions and available devices (a robot's first check that CUDA is usable)."""
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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``vicrop`` with one subparser per subcommand."""
    parser = argparse.ArgumentParser(prog='vicrop', description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    info = commands.add_parser('info', help='library versions and compute devices')
    info.add_argument('--json', action='store_true', help='print one JSON object')
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``vicrop`` with ``argv`` (default: the process arguments); return the exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == '__main__':
    sys.exit(main())
