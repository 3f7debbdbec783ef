"""MuJoCo simulation: the RC car model (``rc_car.xml``) and its env (``rc_car_env.RcCarEnv``).

Importing ``loop_ros.sim`` does not import mujoco; ``loop_ros.sim.rc_car_env`` does.
"""
