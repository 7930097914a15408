"""
The node's parameters: one table with defaults, descriptions, ranges and allowed values.

``declare_parameters`` declares them all with ``ParameterDescriptor``s (read-only where a change
needs a reload or a resubscription) and installs a validating on-set callback, so a bad value,
from a params file at start-up or ``ros2 param set`` at run time, is refused with a reason.
"""

from dataclasses import dataclass, fields

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node

from ..core.config import Method
from .qos import RELIABILITY_CHOICES

CAMERAS = ('head', 'wrist')
METHODS = tuple(method.value for method in Method)


@dataclass(frozen=True)
class Spec:
    """One parameter: name, default, description and constraints."""

    name: str
    default: object
    description: str
    read_only: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


def _camera_specs(camera: str) -> list[Spec]:
    """Return the three parameters of one camera."""
    return [
        Spec(f'{camera}.topic', f'{camera}_camera/image_raw',
             f'Image topic of the {camera} camera (relative names resolve in the node '
             'namespace; remaps apply).', read_only=True),
        Spec(f'{camera}.transport', 'raw',
             "'raw' (sensor_msgs/Image) or 'compressed' (sensor_msgs/CompressedImage).",
             read_only=True, choices=('raw', 'compressed')),
        Spec(f'{camera}.reliability', 'auto',
             "Camera QoS reliability: 'auto' follows the publishers (reliable when all are, "
             "else best effort; re-checked each second), or 'reliable' / 'best_effort' fixed "
             '(a reliable subscriber sees no best-effort camera).',
             read_only=True, choices=RELIABILITY_CHOICES),
    ]  # fmt: skip


SPECS: tuple[Spec, ...] = (
    Spec('model', 'llava-hf/llava-1.5-7b-hf',
         'Model id (local Hugging Face cache), directory written by save_pretrained, or '
         'vicrop-demo (the demo model this package ships).',
         read_only=True),
    Spec('method', 'rel_att', 'Default ViCrop method for questions that name none.',
         choices=METHODS),
    Spec('device', 'auto', "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.",
         read_only=True),
    Spec('dtype', 'auto', "'auto' (bfloat16 on CUDA, float32 on CPU), 'float32', 'bfloat16' "
         "or 'float16'.", read_only=True, choices=('auto', 'float32', 'bfloat16', 'float16')),
    Spec('attention_layer', -1,
         "Decoder layer whose attention makes the map; -1 = the paper's layer for the model.",
         minimum=-1, maximum=1024),
    Spec('max_new_tokens', 16, 'Upper bound on the answer length in tokens.',
         minimum=1, maximum=1024),
    Spec('default_camera', 'head', 'Camera for questions that name none.', choices=CAMERAS),
    *_camera_specs('head'),
    *_camera_specs('wrist'),
    Spec('buffer_length', 30, 'Frames kept per camera (ring buffer of undecoded messages).',
         read_only=True, minimum=1, maximum=1000),
    Spec('max_image_age', 1.0,
         'Seconds a frame may be older than now (or away from the requested stamp).',
         minimum=0.001, maximum=86400.0),
    Spec('frame_wait', 1.0,
         'Seconds after its arrival a question waits for its frame (stamped after the newest '
         'frame, or a fresh newest one); then the kept frames decide.', minimum=0.0,
         maximum=60.0),
    Spec('max_pending', 4, 'Questions that may wait for the model; more are answered BUSY.',
         minimum=1, maximum=1000),
    Spec('timeout', 30.0, 'Seconds a question may take before it is answered TIMEOUT.',
         minimum=0.1, maximum=3600.0),
    Spec('max_image_pixels', 33_177_600,
         'Frames with more pixels are refused (BAD_IMAGE); the default is 8K UHD.',
         minimum=1, maximum=1_000_000_000),
    Spec('max_question_length', 2000,
         'Longer questions are refused (BAD_REQUEST), in characters.',
         minimum=1, maximum=100_000),
    Spec('trust_remote_code', False,
         'Let a checkpoint run its own Python code when loading (never needed for the supported '
         'families).', read_only=True),
    Spec('allow_download', False,
         'Let a model id that is not in the local Hugging Face cache be downloaded at start-up '
         '(off: it fails at once, naming `hf download <id>`).', read_only=True),
    Spec('min_pixels', 0,
         'Qwen-family models: fewest pixels each image is resized to; 0 = the checkpoint\'s.',
         read_only=True, minimum=0, maximum=1_000_000_000),
    Spec('max_pixels', 0,
         'Qwen-family models: most pixels each image is resized to (the main cost knob; the '
         'paper used 200704 = 256 x 28 x 28); 0 = the checkpoint\'s.',
         read_only=True, minimum=0, maximum=1_000_000_000),
    Spec('publish_saliency', True, 'Publish the heatmap-with-box image on ~/saliency.'),
    Spec('tile_threshold', 1024,
         'Frames with a longer side (pixels) get one saliency map per tile (a thin strip at '
         'most 4 x its area / threshold^2 tiles).',
         minimum=64, maximum=65536),
    Spec('reuse_frames', 2,
         'Recently prepared frames kept for further questions about the same pixels (their '
         "shared prefix and generic-question maps); each holds the prefix's keys and values "
         '(about 0.3 GB for a 7B LLaVA in bfloat16). 0 keeps none.',
         read_only=True, minimum=0, maximum=64),
    Spec('autostart', True,
         'Configure (load the model) and activate at start-up, as a plain node would.',
         read_only=True),
)  # fmt: skip
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


@dataclass(frozen=True)
class Settings:
    """The parameter values, read at once (attribute names: dots become underscores)."""

    model: str
    method: str
    device: str
    dtype: str
    attention_layer: int
    max_new_tokens: int
    default_camera: str
    head_topic: str
    head_transport: str
    head_reliability: str
    wrist_topic: str
    wrist_transport: str
    wrist_reliability: str
    buffer_length: int
    max_image_age: float
    frame_wait: float
    max_pending: int
    timeout: float
    max_image_pixels: int
    max_question_length: int
    trust_remote_code: bool
    allow_download: bool
    min_pixels: int
    max_pixels: int
    publish_saliency: bool
    tile_threshold: int
    reuse_frames: int
    autostart: bool

    @classmethod
    def from_node(cls, node: Node) -> 'Settings':
        """Read every parameter of ``node``."""
        return cls(
            **{f.name: node.get_parameter(_parameter_name(f.name)).value for f in fields(cls)}
        )

    @classmethod
    def defaults(cls, **changes) -> 'Settings':
        """Return the default of every parameter, with ``changes`` (field names) applied."""
        values = {f.name: SPEC_BY_NAME[_parameter_name(f.name)].default for f in fields(cls)}
        return cls(**(values | changes))

    def camera(self, name: str) -> tuple[str, str, str]:
        """Return (topic, transport, reliability) of camera ``name``."""
        return (
            getattr(self, f'{name}_topic'),
            getattr(self, f'{name}_transport'),
            getattr(self, f'{name}_reliability'),
        )


def _parameter_name(field_name: str) -> str:
    """Return the parameter behind a Settings field ('head_topic' -> 'head.topic')."""
    camera, _, key = field_name.partition('_')
    return f'{camera}.{key}' if camera in CAMERAS else field_name


def check_value(name: str, value) -> str | None:
    """Return why ``value`` is not allowed for parameter ``name``, or None when it is."""
    spec = SPEC_BY_NAME.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {", ".join(spec.choices)}; got {value!r}'
    if spec.minimum is not None and not spec.minimum <= value <= spec.maximum:
        return f'{name} must be in [{spec.minimum}, {spec.maximum}]; got {value!r}'
    if name == 'model' and not str(value).strip():
        return 'model must name a model id or directory'
    return None


def _descriptor(spec: Spec) -> ParameterDescriptor:
    """Return the ParameterDescriptor of ``spec``."""
    description = spec.description
    if spec.choices:
        description += f' One of: {", ".join(spec.choices)}.'
    descriptor = ParameterDescriptor(description=description, read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = f'one of: {", ".join(spec.choices)}'
    if spec.minimum is not None:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)
            ]
        else:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=spec.minimum, to_value=spec.maximum, step=0.0)
            ]
    return descriptor


def _validate(parameters) -> SetParametersResult:
    """On-set callback: refuse the whole set when any value is not allowed."""
    for parameter in parameters:
        reason = check_value(parameter.name, parameter.value)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
    return SetParametersResult(successful=True)


def declare_parameters(node: Node) -> None:
    """Declare every parameter of :data:`SPECS` on ``node`` with validation."""
    node.add_on_set_parameters_callback(_validate)
    for spec in SPECS:
        node.declare_parameter(spec.name, spec.default, _descriptor(spec))
