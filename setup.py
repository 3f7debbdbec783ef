"""loop_ros: ament_python package, also pip-installable.

install_requires stays free of the ros-* wheels so a distro install (colcon + rosdep)
keeps rclpy from the distro; the pip-only path installs them from requirements.txt.
"""
from glob import glob

from setuptools import find_packages, setup

package_name = "loop_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["loop_ros", "loop_ros.*"]),
    package_data={"loop_ros": ["sim/*.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
        ("share/" + package_name + "/models/rc_car", glob("models/rc_car/*")),
    ],
    install_requires=["numpy", "PyYAML", "onnx", "onnxruntime", "mujoco", "rosbags", "foxglove-sdk", "tqdm",
                      "cryptography"],
    zip_safe=False,
    maintainer="loop_ros developers",
    description="LOOP / ARC / safeARC planning with learned models for ROS 2",
    license="MIT",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "loop-ros = loop_ros.cli:main",
            "planner = loop_ros.nodes.planner:main",
            "sim = loop_ros.nodes.sim:main",
            "trainer = loop_ros.nodes.trainer:main",
            "foxglove_bridge = loop_ros.nodes.foxglove_bridge:main",
            "lifecycle_manager = loop_ros.nodes.lifecycle_manager:main",
        ],
    },
)
