"""The parameter table: named cameras, their parameters, and the values refused (no DDS)."""

import pytest

from vicrop_ros.ros.params import (
    DEFAULT_CAMERAS,
    SPECS,
    CameraSettings,
    Settings,
    cameras_problem,
    check_value,
    spec_named,
    specs_for,
)


def test_the_default_cameras_are_head_and_wrist_with_three_parameters_each():
    names = {spec.name for spec in SPECS}
    assert DEFAULT_CAMERAS == ('head', 'wrist')
    for camera in DEFAULT_CAMERAS:
        assert {f'{camera}.topic', f'{camera}.transport', f'{camera}.reliability'} <= names
    assert Settings.defaults().camera_names == DEFAULT_CAMERAS
    assert Settings.defaults().camera('wrist').topic == 'wrist_camera/image_raw'


def test_named_cameras_get_their_own_parameters_and_settings():
    names = ('r1_head', 'r1_wrist', 'left')
    specs = {spec.name: spec for spec in specs_for(names)}
    assert specs['left.topic'].default == 'left_camera/image_raw'
    assert 'head.topic' not in specs
    assert Settings.defaults(cameras=names).default_camera == 'r1_head'  # the first
    settings = Settings.defaults(cameras=names, default_camera='left')
    assert settings.camera_names == names
    assert settings.camera('r1_wrist') == CameraSettings.defaults('r1_wrist')
    with pytest.raises(KeyError):
        settings.camera('head')
    assert spec_named('left.reliability').choices == specs['left.reliability'].choices


@pytest.mark.parametrize(
    ('names', 'reason'),
    [
        ([], 'at least one camera'),
        (['head', 'head'], 'head more than once'),
        (['head', '2nd'], "'2nd' is not a letter"),
        (['head', 'a.b'], "'a.b' is not a letter"),
        (['image'], "'image' is reserved"),
        (['auto', 'head'], "'auto' is reserved"),
        ([f'c{i}' for i in range(65)], 'at most 64'),
    ],
)
def test_a_bad_cameras_list_is_refused_with_a_reason(names, reason):
    assert reason in cameras_problem(names)
    assert reason in check_value('cameras', names)


def test_default_camera_must_be_one_of_the_cameras():
    assert check_value('default_camera', 'wrist') is None
    assert 'one of the cameras (left, right)' in check_value(
        'default_camera', 'head', ('left', 'right')
    )
    assert check_value('left.transport', 'compressed', ('left',)) is None
    assert 'must be one of' in check_value('left.transport', 'jpeg', ('left',))
