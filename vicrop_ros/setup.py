"""Install vicrop_ros: the Python package, its share/ files and its console scripts."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'vicrop_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    # The shipped demo model (docs/demo-model.md): the name 'vicrop-demo' loads it.
    package_data={package_name: ['weights/demo_llava/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='vicrop_ros maintainers',
    maintainer_email='maintainers@vicrop-ros.dev',
    description='ViCrop perception node: questions about small visual details in camera images.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'vicrop = vicrop_ros.cli:main',
            'vicrop_node = vicrop_ros.ros.node:main',
            'vicrop-replay = vicrop_ros.ros.replay:main',
            'vicrop-make-demo-bag = vicrop_ros.ros.demo_bag:main',
            'vicrop-load-test = vicrop_ros.ros.load_test:main',
            'vicrop-idle-cpu = vicrop_ros.ros.load_test:idle_main',
            'vicrop-dds-latency = vicrop_ros.ros.dds_latency:main',
        ],
    },
)
