"""The math core of loop_ros: numpy / torch / onnxruntime only, never rclpy."""
