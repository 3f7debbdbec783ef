"""Sim-in-the-loop (or robot-in-the-loop) for any task: the ``trainer``, the task's ``sim`` (when it
has one) and the ``planner`` with the task's params file, and with ``foxglove:=true`` the Foxglove
bridge (ws://127.0.0.1:8765, ``foxglove.port``).

    ros2 launch loop_ros loop.launch.py [task:=rc_car | task:=gym:Hopper-v5 | task:=my_pkg.tasks:Arm]
        [params_file:=/path/to/params.yaml] [namespace:=/car0] [use_sim_time:=false] [log_level:=info]
        [autostart:=true] [foxglove:=true]
        [signing_key:=/path/key.pem] [trusted_keys:="['/path/a.pub.pem', '/path/b.pub.pem']"]
        [discovery_range:=LOCALHOST] [explore:=false]

Every node is a managed (lifecycle) node started unconfigured; with ``autostart:=true`` (the
default) ``lifecycle_manager`` configures and activates them in start order (the trainer first, so
it records from the first tick), as ``loop-ros up`` does; with ``autostart:=false`` they wait for
yours (``ros2 lifecycle set /planner configure``...). ``namespace`` moves every node and topic
under it (``/diagnostics`` and ``/clock`` stay global).

The nodes come from ``loop_ros.nodes.task_nodes`` and the params file from the task
(``loop_ros.settings.params_file_of``), as ``loop-ros up TASK`` starts them on machines without
ros2 launch. The trainer signs its models with ``signing_key`` and the planner accepts models from
the ``model`` topic only when signed by a key of ``trusted_keys`` (README "Signed models"); both
default to the key pair in ~/.ros/loop_ros/keys ($LOOP_ROS_KEYS_DIR), created on first use, and win
over the params file. ``discovery_range`` sets ROS_AUTOMATIC_DISCOVERY_RANGE of every node
(LOCALHOST: DDS stays on this machine; SUBNET to reach a trainer on another host).
"""
import json
from typing import List

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from loop_ros.core.signing import ensure_key_pair
from loop_ros.core.tasks import make_task
from loop_ros.nodes import FOXGLOVE, TRAINER, TRAINER_ENV, task_nodes
from loop_ros.settings import params_file_of


def task_node_actions(context):
    """The nodes of the ``task`` argument, in start order (the trainer first, so it records from the
    first tick), each named after itself, with the task's params file unless one is given."""
    task = make_task(LaunchConfiguration("task").perform(context))
    params = params_file_of(task, LaunchConfiguration("params_file").perform(context) or None)
    files = [str(params)] if params is not None else []
    names = (TRAINER,) + task_nodes(task)
    # The trainer signs, the planner trusts its key, and explores while the trainer learns (Alg. 1).
    per_node = {
        TRAINER: {"security.signing_key": ParameterValue(LaunchConfiguration("signing_key"), value_type=str)},
        "planner": {"security.trusted_keys": ParameterValue(LaunchConfiguration("trusted_keys"),
                                                            value_type=List[str]),
                    "task.explore": ParameterValue(LaunchConfiguration("explore"), value_type=bool)},
    }
    # The sim and the planner start once the two other nodes subscribe to their state / action
    # (the bridge subscribes too, but they never wait for a viewer).
    common = {"task.name": task.name, "task.start_subscribers": len(names) - 1}
    # Managed nodes wait unconfigured; lifecycle_manager (autostart) brings them up in order.
    standard = {"autostart": False, "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}
    foxglove = IfCondition(LaunchConfiguration("foxglove")).evaluate(context)
    managed = names + ((FOXGLOVE,) if foxglove else ())
    nodes = [Node(package="loop_ros", executable=name, name=name, namespace=LaunchConfiguration("namespace"),
                  output="screen", parameters=[*files, common if name != FOXGLOVE else {"task.name": task.name},
                                               standard, per_node.get(name, {})],
                  arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
                  additional_env=TRAINER_ENV if name == TRAINER else None)
             for name in managed]
    manager = Node(package="loop_ros", executable="lifecycle_manager", name="lifecycle_manager",
                   namespace=LaunchConfiguration("namespace"), output="screen", arguments=list(managed),
                   condition=IfCondition(LaunchConfiguration("autostart")))
    return [*nodes, manager]


def generate_launch_description() -> LaunchDescription:
    private_key, public_key = ensure_key_pair()  # ~/.ros/loop_ros/keys, created on first use
    arguments = [
        DeclareLaunchArgument("task", default_value="rc_car",
                              description="task name: rc_car, gym:<EnvId>, an installed loop_ros.tasks entry point, "
                                          "or package.module:attribute"),
        DeclareLaunchArgument("params_file", default_value="",
                              description="ROS 2 params file of every node (default: the task's own)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of every node and its topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="take time from /clock"),
        DeclareLaunchArgument("log_level", default_value="info", description="the nodes' ROS log level"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate the managed nodes in order (false: leave them "
                                          "unconfigured for your lifecycle manager)"),
        DeclareLaunchArgument("foxglove", default_value="false",
                              description="also start the Foxglove bridge (a viewer of the planner)"),
        DeclareLaunchArgument("signing_key", default_value=str(private_key),
                              description="the trainer's Ed25519 private key PEM (security.signing_key)"),
        DeclareLaunchArgument("trusted_keys", default_value=json.dumps([str(public_key)]),
                              description="YAML list of the public key PEMs whose models the planner accepts "
                                          "(security.trusted_keys)"),
        DeclareLaunchArgument("discovery_range", default_value="LOCALHOST",
                              description="ROS_AUTOMATIC_DISCOVERY_RANGE of every node: LOCALHOST, SUBNET, "
                                          "SYSTEM_DEFAULT or OFF"),
        DeclareLaunchArgument("explore", default_value="false",
                              description="the planner explores (task.explore, Alg. 1) while the trainer learns; off "
                                          "by default: the deployed model drives its plan's mean"),
    ]
    discovery = SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", LaunchConfiguration("discovery_range"))
    return LaunchDescription([*arguments, discovery, OpaqueFunction(function=task_node_actions)])
