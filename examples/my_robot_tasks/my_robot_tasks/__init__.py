"""Tasks of my robot for loop_ros (an example package: README, "Your own task")."""
