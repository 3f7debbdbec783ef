"""Sim-in-the-loop RC car: the ``sim``, ``planner`` and ``trainer`` nodes with ``config/rc_car.yaml``,
and with ``foxglove:=true`` the Foxglove bridge (ws://127.0.0.1:8765, ``foxglove.port``).

    ros2 launch loop_ros rc_car.launch.py [params_file:=/path/to/params.yaml] [foxglove:=true]

``loop-ros up rc_car`` starts the same executables with the same params file on machines
without ros2 launch.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

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
    # The sim and the planner start once the two other nodes subscribe to their state / action
    # (the bridge subscribes too, but they never wait for a viewer).
    nodes = [
        Node(package="loop_ros", executable=name, name=name, output="screen",
             parameters=[LaunchConfiguration("params_file"), {"task.start_subscribers": len(NODES) - 1}],
             additional_env=TRAINER_ENV if name == "trainer" else None)
        for name in NODES
    ]
    bridge = Node(package="loop_ros", executable=FOXGLOVE, name=FOXGLOVE, output="screen",
                  parameters=[LaunchConfiguration("params_file")], condition=IfCondition(LaunchConfiguration("foxglove")))
    return LaunchDescription([params_file, foxglove, *nodes, bridge])
