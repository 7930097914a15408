"""
Every QoS profile of the node, once, and the rule that matches a camera's publishers.

Small results (answers, crop boxes, questions) are RELIABLE with room for any burst; large images
(saliency overlays) keep one or two messages per subscriber, so that a slow viewer holds at most
one or two frames' worth of memory (a 1280x720 bgr8 overlay is 2.8 MB) instead of tens of MB.
"""

from collections.abc import Iterable
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# The environment variables that point Fast DDS at an XML profile (Jazzy's, then Kilted's name).
FASTDDS_PROFILE_VARIABLES = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')


def shm_profile_path() -> str:
    """Return the installed shared-memory profile for large images (config/fastdds_shm.xml)."""
    return str(Path(get_package_share_directory('vicrop_ros')) / 'config' / 'fastdds_shm.xml')


def with_dds_profile(env: dict[str, str], profile: str | None) -> dict[str, str]:
    """Return ``env`` pointing Fast DDS at ``profile`` (None: at no profile, the defaults)."""
    env = {k: v for k, v in env.items() if k not in FASTDDS_PROFILE_VARIABLES}
    return env | dict.fromkeys(FASTDDS_PROFILE_VARIABLES, profile) if profile else env


# Camera reliability parameter values; 'auto' matches the publishers (see camera_reliability).
RELIABILITY_CHOICES = ('auto', 'reliable', 'best_effort')

# Answers, crop boxes and incoming questions (small messages): every one matters, so the history
# holds a burst as large as max_pending allows (subscribers need room for their bursts too).
RESULTS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
# Saliency overlays (full-size images): reliable for RViz/Foxglove and bag recorders, depth 2.
LARGE_IMAGES = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
# Action feedback: late-joining clients still get the stages already reported.
FEEDBACK = QoSProfile(
    depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
# Service requests and action goals: the services default, with room for as many waiting
# requests as max_pending allows (a history of 10 drops requests of a burst before they are taken).
REQUESTS = QoSProfile(
    depth=1000,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
DIAGNOSTICS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def camera_qos(reliability: ReliabilityPolicy, depth: int) -> QoSProfile:
    """Return the sensor-data profile with ``reliability`` and a history of ``depth`` frames."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        durability=qos_profile_sensor_data.durability,
        reliability=reliability,
    )


def camera_reliability(choice: str, publishers: Iterable[ReliabilityPolicy]) -> ReliabilityPolicy:
    """
    Return the reliability to subscribe a camera with.

    ``choice`` is a value of RELIABILITY_CHOICES; ``publishers`` the reliability of each publisher
    now on the topic. 'auto' gives RELIABLE when there are publishers and every one is reliable
    (a reliable reader gets every large frame; best effort loses fragments over UDP), else
    BEST_EFFORT, which matches publishers of either kind (as ``ros2 bag record`` decides).
    """
    if choice == 'reliable':
        return ReliabilityPolicy.RELIABLE
    if choice == 'best_effort':
        return ReliabilityPolicy.BEST_EFFORT
    if choice != 'auto':
        raise ValueError(f'reliability must be one of {", ".join(RELIABILITY_CHOICES)}')
    policies = list(publishers)
    if policies and all(policy == ReliabilityPolicy.RELIABLE for policy in policies):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def policy_name(reliability: ReliabilityPolicy) -> str:
    """Return 'reliable' or 'best_effort' (the parameter's spelling)."""
    return 'reliable' if reliability == ReliabilityPolicy.RELIABLE else 'best_effort'
