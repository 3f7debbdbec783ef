"""loop_ros: LOOP (Learning Off-Policy with Online Planning) for ROS 2."""

__version__ = "0.1.0"
