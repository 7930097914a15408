"""The README's tables agree with the interfaces and the parameters."""

from pathlib import Path
import re

from vicrop_interfaces.msg import Answer
from vicrop_ros.models.registry import FAMILIES
from vicrop_ros.ros.jobs import STATUS_NAMES
from vicrop_ros.ros.params import SPECS

README = (Path(__file__).resolve().parents[2] / 'README.md').read_text()


def table_rows(first_header: str) -> list[list[str]]:
    """Return the cells of each row of the README table whose first header cell is given."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f'| {first_header} |'))
    rows, first_row = [], start + 2  # after the header and the separator
    for line in lines[first_row:]:
        if not line.startswith('|'):
            break
        rows.append([cell.strip() for cell in line.strip('|').split('|')])
    return rows


def test_the_status_table_lists_every_answer_status_with_its_value():
    documented = {row[0].strip('`'): int(row[1]) for row in table_rows('status')}
    assert documented == {name: value for value, name in STATUS_NAMES.items()}
    assert documented['CANCELED'] == Answer.CANCELED and len(documented) == 10


def test_the_parameter_table_lists_every_parameter():
    documented = set()
    for row in table_rows('parameter'):
        documented |= {name.strip('` ') for name in re.split(r'[,/]', row[0])}
    assert documented == {spec.name for spec in SPECS}


def test_the_family_table_is_the_registry():
    documented = [tuple(row) for row in table_rows('family')]
    expected = [
        (
            family.title,
            f'`{family.name}`',
            f'`{family.checkpoint}`',
            '{} of {}'.format(*family.adapter.paper_layer),
            'yes' if family.adapter.shares_prefix else 'no',
        )
        for family in FAMILIES
    ]
    assert documented == expected
