"""Sim-in-the-loop RC car: the ``sim``, ``planner`` and ``trainer`` nodes with ``config/rc_car.yaml``,
and with ``foxglove:=true`` the Foxglove bridge (ws://127.0.0.1:8765, ``foxglove.port``).

    ros2 launch loop_ros rc_car.launch.py [params_file:=/path/to/params.yaml] [foxglove:=true]
        [signing_key:=/path/key.pem] [trusted_keys:="['/path/a.pub.pem', '/path/b.pub.pem']"]
        [discovery_range:=LOCALHOST] [explore:=false]

The trainer signs its models with ``signing_key`` and the planner accepts models from the
``model`` topic only when signed by a key of ``trusted_keys`` (README "Signed models"); both
default to the key pair in ~/.ros/loop_ros/keys ($LOOP_ROS_KEYS_DIR), created on first use, and
win over the params file. ``discovery_range`` sets ROS_AUTOMATIC_DISCOVERY_RANGE of every node
(LOCALHOST: DDS stays on this machine; SUBNET to reach a trainer on another host).
``loop-ros up rc_car`` starts the same executables with the same params file on machines
without ros2 launch.
"""
import json
from typing import List

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from loop_ros.core.signing import ensure_key_pair
from loop_ros.supervisor import FOXGLOVE, TRAINER_ENV

NODES = ("trainer", "sim", "planner")
"""Executables (setup.py console_scripts), started in this order, each named after itself
(the trainer first, as ``loop-ros up`` does, so it records from the first tick)."""



def generate_launch_description() -> LaunchDescription:
    params_file = DeclareLaunchArgument(
        "params_file",
        default_value=PathJoinSubstitution([FindPackageShare("loop_ros"), "config", "rc_car.yaml"]),
        description="ROS 2 params file of every node (fields of loop_ros/core/config.py)",
    )
    foxglove = DeclareLaunchArgument("foxglove", default_value="false",
                                     description="also start the Foxglove bridge (a viewer of the planner)")
    private_key, public_key = ensure_key_pair()  # ~/.ros/loop_ros/keys, created on first use
    signing_key = DeclareLaunchArgument("signing_key", default_value=str(private_key),
                                        description="the trainer's Ed25519 private key PEM (security.signing_key)")
    trusted_keys = DeclareLaunchArgument(
        "trusted_keys", default_value=json.dumps([str(public_key)]),
        description="YAML list of the public key PEMs whose models the planner accepts (security.trusted_keys)")
    discovery_range = DeclareLaunchArgument(
        "discovery_range", default_value="LOCALHOST",
        description="ROS_AUTOMATIC_DISCOVERY_RANGE of every node: LOCALHOST, SUBNET, SYSTEM_DEFAULT or OFF")
    # The trainer signs, the planner trusts its key, and explores while the trainer learns (Alg. 1).
    per_node = {
        "trainer": {"security.signing_key": ParameterValue(LaunchConfiguration("signing_key"), value_type=str)},
        "planner": {"security.trusted_keys": ParameterValue(LaunchConfiguration("trusted_keys"),
                                                            value_type=List[str]),
                    "task.explore": ParameterValue(LaunchConfiguration("explore"), value_type=bool)},
    }
    explore = DeclareLaunchArgument("explore", default_value="false",
                                    description="the planner explores (task.explore, Alg. 1) while the trainer "
                                                "learns; off by default: the deployed model drives its plan's mean")
    # The sim and the planner start once the two other nodes subscribe to their state / action
    # (the bridge subscribes too, but they never wait for a viewer).
    nodes = [
        Node(package="loop_ros", executable=name, name=name, output="screen",
             parameters=[LaunchConfiguration("params_file"), {"task.start_subscribers": len(NODES) - 1},
                         per_node.get(name, {})],
             additional_env=TRAINER_ENV if name == "trainer" else None)
        for name in NODES
    ]
    bridge = Node(package="loop_ros", executable=FOXGLOVE, name=FOXGLOVE, output="screen",
                  parameters=[LaunchConfiguration("params_file")], condition=IfCondition(LaunchConfiguration("foxglove")))
    discovery = SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", LaunchConfiguration("discovery_range"))
    return LaunchDescription([params_file, foxglove, signing_key, trusted_keys, discovery_range, explore, discovery,
                              *nodes, bridge])
