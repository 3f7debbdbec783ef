"""The RC car: ``loop.launch.py`` with ``task:=rc_car`` (the sim-in-the-loop car of ``make run``).

    ros2 launch loop_ros rc_car.launch.py [foxglove:=true] [params_file:=...] [explore:=false] ...

Every argument of ``loop.launch.py`` applies; this file only fixes the task.
"""
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    loop = PathJoinSubstitution([FindPackageShare("loop_ros"), "launch", "loop.launch.py"])
    return LaunchDescription([IncludeLaunchDescription(PythonLaunchDescriptionSource(loop),
                                                       launch_arguments={"task": "rc_car"}.items())])
