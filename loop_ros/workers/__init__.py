"""The nodes' runtime parts without ROS: the planner's plan worker and tick policy
(``plan_worker.py``), its model loader and the loader's child process (``model_loader.py``), the
trainer's learning thread (``training_worker.py``), all on one small thread loop (``thread_loop.py``),
and thread priorities (``priority.py``). The rclpy nodes in ``loop_ros.nodes`` are message glue
around them; nothing here imports rclpy.
"""
