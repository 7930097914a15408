"""
The node's parameters: one table with defaults, descriptions, ranges and allowed values.

``declare_parameters`` declares them all with ``ParameterDescriptor``s (read-only where a change
needs a reload or a resubscription) and installs a validating on-set callback, so a bad value,
from a params file at start-up or ``ros2 param set`` at run time, is refused with a reason.

The cameras are named by the ``cameras`` parameter (default ``[head, wrist]``); each name has
its own ``<name>.topic``, ``<name>.transport`` and ``<name>.reliability``, declared once the
names are known. So one node serves a robot with four cameras, or four robots with two each.
"""

from dataclasses import dataclass, fields
import re

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from ..core.config import Method
from .qos import RELIABILITY_CHOICES

DEFAULT_CAMERAS = ('head', 'wrist')
# A camera name: a parameter-name segment and a topic-name token (it starts <name>.topic).
CAMERA_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')
# Words a request's camera field uses for something else: an image sent with the request, the
# node's own choice of camera.
RESERVED_CAMERA_NAMES = ('image', 'auto')
MAX_CAMERAS = 64
METHODS = tuple(method.value for method in Method)


class SettingsError(ValueError):
    """A parameter value the node cannot start with (e.g. a bad ``cameras`` list)."""


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


def camera_specs(camera: str) -> list[Spec]:
    """Return the three parameters of camera ``camera``: ``<camera>.topic`` and so on."""
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


NODE_SPECS: tuple[Spec, ...] = (  # every parameter but the cameras and theirs
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
    Spec('default_camera', DEFAULT_CAMERAS[0],
         'Camera for questions that name none: one of the cameras (default: the first).'),
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
    Spec('max_pending_per_camera', 0,
         'Questions about one camera (or about images sent with requests) that may wait; more '
         'are answered BUSY. The queue serves first the camera served least recently. '
         '0 = max_pending.',
         minimum=0, maximum=1000),
    Spec('max_batch', 4,
         'Questions about the same camera frame that are answered together: one shared image '
         'prefix, their maps in one pass, their answers decoded as one batch (each equal to its '
         'answer alone). 1 = one question at a time.', minimum=1, maximum=64),
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
CAMERAS_SPEC = Spec(
    'cameras', list(DEFAULT_CAMERAS),
    'Names of the cameras; each has <name>.topic, <name>.transport and <name>.reliability. '
    'A name is a letter then letters, digits or underscores; not image or auto.',
    read_only=True,
)  # fmt: skip


def specs_for(cameras) -> tuple[Spec, ...]:
    """Return every parameter of a node with the cameras ``cameras`` (names)."""
    return (CAMERAS_SPEC, *NODE_SPECS, *(spec for name in cameras for spec in camera_specs(name)))


SPECS = specs_for(DEFAULT_CAMERAS)  # the parameters of a node with the default cameras
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
_CAMERA_KEYS = tuple(spec.name.partition('.')[2] for spec in camera_specs('x'))


def spec_named(name: str) -> Spec | None:
    """Return the spec of parameter ``name`` (any camera's too), or None if there is none."""
    camera, _, key = name.partition('.')
    if key in _CAMERA_KEYS and CAMERA_NAME.fullmatch(camera):
        return next(spec for spec in camera_specs(camera) if spec.name == name)
    return SPEC_BY_NAME.get(name)


def cameras_problem(names) -> str | None:
    """Return why ``names`` cannot be the ``cameras`` list, or None when they can."""
    if not names:  # an empty list on the command line (cameras:=[]) has no type: None
        return 'cameras must name at least one camera'
    names = list(names)
    if len(names) > MAX_CAMERAS:
        return f'cameras names {len(names)} cameras; at most {MAX_CAMERAS}'
    for name in names:
        if not isinstance(name, str) or not CAMERA_NAME.fullmatch(name):
            return (f'camera name {name!r} is not a letter followed by letters, digits or '
                    'underscores')  # fmt: skip
        if name in RESERVED_CAMERA_NAMES:
            return f'camera name {name!r} is reserved (a request uses it for something else)'
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f'cameras lists {", ".join(repeated)} more than once'
    return None


@dataclass(frozen=True)
class CameraSettings:
    """One camera's parameters (``<name>.topic``, ``<name>.transport``, ``<name>.reliability``)."""

    name: str
    topic: str
    transport: str
    reliability: str

    @classmethod
    def defaults(cls, name: str) -> 'CameraSettings':
        """Return camera ``name`` with its default parameters."""
        return cls(name, *(spec.default for spec in camera_specs(name)))


@dataclass(frozen=True)
class Settings:
    """The parameter values, read at once (the cameras' as CameraSettings, in listed order)."""

    model: str
    method: str
    device: str
    dtype: str
    attention_layer: int
    max_new_tokens: int
    default_camera: str
    buffer_length: int
    max_image_age: float
    frame_wait: float
    max_pending: int
    max_pending_per_camera: int
    max_batch: int
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
    cameras: tuple[CameraSettings, ...] = ()  # in listed order

    @classmethod
    def from_node(cls, node: Node) -> 'Settings':
        """Read every parameter of ``node``."""
        names = node.get_parameter(CAMERAS_SPEC.name).value
        cameras = tuple(
            CameraSettings(name, *(node.get_parameter(spec.name).value
                                   for spec in camera_specs(name)))
            for name in names
        )  # fmt: skip
        values = {f.name: node.get_parameter(f.name).value for f in fields(cls)
                  if f.name != 'cameras'}  # fmt: skip
        return cls(**values, cameras=cameras)

    @classmethod
    def defaults(cls, **changes) -> 'Settings':
        """
        Return the default of every parameter, with ``changes`` (field names) applied.

        ``cameras`` may be given as names, each with its default parameters; the default camera
        is the first, as on a node.
        """
        cameras = changes.pop('cameras', DEFAULT_CAMERAS)
        cameras = tuple(c if isinstance(c, CameraSettings) else CameraSettings.defaults(c)
                        for c in cameras)  # fmt: skip
        values = {spec.name: spec.default for spec in NODE_SPECS}
        values['default_camera'] = cameras[0].name
        return cls(**(values | changes), cameras=cameras)

    @property
    def camera_names(self) -> tuple[str, ...]:
        """Return the cameras' names, in listed order."""
        return tuple(camera.name for camera in self.cameras)

    def camera(self, name: str) -> CameraSettings:
        """Return camera ``name``'s parameters; KeyError if there is no such camera."""
        for camera in self.cameras:
            if camera.name == name:
                return camera
        raise KeyError(f'no camera {name!r}')


def check_value(name: str, value, cameras=DEFAULT_CAMERAS) -> str | None:
    """
    Return why ``value`` is not allowed for parameter ``name``, or None when it is.

    ``cameras``: the node's camera names (``default_camera`` must be one of them).
    """
    if name == CAMERAS_SPEC.name:
        return cameras_problem(value)
    if name == 'default_camera' and value not in cameras:
        return f'default_camera must be one of the cameras ({", ".join(cameras)}); got {value!r}'
    spec = spec_named(name)
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


def declare_parameters(node: Node) -> None:
    """
    Declare the ``cameras`` list, then every other parameter, on ``node`` with validation.

    Raises SettingsError for a ``cameras`` list or a start-up value that is not allowed.
    """
    cameras: list[str] = []  # known once the list is declared

    def validate(parameters) -> SetParametersResult:
        """On-set callback: refuse the whole set when any value is not allowed."""
        for parameter in parameters:
            reason = check_value(parameter.name, parameter.value, cameras)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    try:
        names = node.declare_parameter(
            CAMERAS_SPEC.name, CAMERAS_SPEC.default, _descriptor(CAMERAS_SPEC)
        ).value
    except InvalidParameterTypeException:  # e.g. cameras:=[] (no type) or cameras:=head
        raise SettingsError('cameras must be a list of camera names, e.g. [head, wrist]') from None
    problem = cameras_problem(names)
    if problem:
        raise SettingsError(problem)
    cameras.extend(names)
    node.add_on_set_parameters_callback(validate)
    try:
        for spec in specs_for(names)[1:]:
            default = names[0] if spec.name == 'default_camera' else spec.default
            node.declare_parameter(spec.name, default, _descriptor(spec))
    except InvalidParameterValueException as error:  # a start-up value the callback refused
        raise SettingsError(str(error)) from None
