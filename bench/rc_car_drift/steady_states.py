"""Constant-input sweep of the MuJoCo car (bench/RESULTS.md, "A drift task"): hold (throttle, steer)
for 12 s from the evaluation start ``reset(seed=0)`` and describe the last 3 s: the radius of the
circle the CoM drives (least-squares fit) and how far the path strays from it, the speed, and the body
slip angle atan2(v_lat, v_long); or how the run ended early (rolled over, or left the 3 m arena).

    .venv/bin/python bench/rc_car_drift/steady_states.py bench/rc_car_drift/steady_states.json

``--task rc_car_drift``: the same sweep of the car on Drift-v0's brush tyres (``steady_states_brush.json``).

``--kinetic-ratio K --slide-angle A``: Drift-v0's tyres as far as MuJoCo allows. Its brush tyres give
mu_k = 1.96 x load in a full slide against at most mu_s = 1.37 x load before it (``driftgym``
``model.py``: K = 1.43), and MuJoCo's contacts have one friction coefficient. So before each physics step
a rear tyre whose wheel slips sideways by at least A degrees (atan2(|v_lat|, |v_long|) of the wheel's
centre, above 0.2 m/s) gets K x its friction, else its own (the XML's 0.5).
"""
import argparse
import json

import mujoco
import numpy as np

from loop_ros.core.config import SafetyConfig
from loop_ros.core.tasks import make_task
from loop_ros.sim.rc_car_env import MIN_UPRIGHT

STEPS, KEPT = 600, 150  # 12 s at 50 Hz, the last 3 s described


def fit_circle(xy: np.ndarray) -> tuple[float, float]:
    """(radius, std of the points' distance from the fitted circle) of points (n, 2)."""
    x, y = xy[:, 0], xy[:, 1]
    (cx, cy, c), *_ = np.linalg.lstsq(np.c_[2 * x, 2 * y, np.ones(len(x))], x**2 + y**2, rcond=None)
    radius = float(np.sqrt(c + cx**2 + cy**2))
    return radius, float(np.std(np.hypot(x - cx, y - cy) - radius))


class KineticRearTyres:
    """Sets the rear tyres' friction before each physics step: ``ratio`` x their own while sliding."""

    def __init__(self, env, ratio: float, slide_angle_deg: float):
        model = env.model
        self.env, self.ratio, self.slide_angle = env, ratio, np.radians(slide_angle_deg)
        self.tyres = [model.geom(name).id for name in ("rear_left_tyre", "rear_right_tyre")]
        self.wheels = [model.body(name).id for name in ("rear_left_wheel", "rear_right_wheel")]
        self.chassis = model.body("chassis").id
        self.static = model.geom_friction[self.tyres, 0].copy()
        self._velocity = np.zeros(6)

    def step(self, action) -> tuple:
        """``env.step`` with the physics stepped here, one step at a time."""
        env, (throttle, steer) = self.env, np.clip(action, -1.0, 1.0)
        env.data.ctrl[env._drive_ids] = throttle
        env.data.ctrl[env._steer_ids] = steer * env.max_steer
        for _ in range(env.frame_skip):
            self._set_friction()
            mujoco.mj_step(env.model, env.data)
        obs = env.observation()
        return obs, 0.0, 0.0, env._crashed(obs), False, env._info(obs)

    def _set_friction(self) -> None:
        model, data = self.env.model, self.env.data
        axes = data.xmat[self.chassis].reshape(3, 3)
        for tyre, wheel, static in zip(self.tyres, self.wheels, self.static):
            mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, wheel, self._velocity, 0)
            v_long, v_lat = self._velocity[3:] @ axes[:, 0], self._velocity[3:] @ axes[:, 1]
            sliding = np.hypot(v_long, v_lat) > 0.2 and np.arctan2(abs(v_lat), abs(v_long)) >= self.slide_angle
            model.geom_friction[tyre, 0] = static * (self.ratio if sliding else 1.0)


def hold(env, throttle: float, steer: float, stepper=None) -> dict:
    env.reset(seed=0)
    xy, speed, slip = [], [], []
    for step in range(STEPS):
        obs, _, _, terminated, _, info = (stepper or env).step([throttle, steer])
        if terminated:
            return {"throttle": throttle, "steer": steer, "ended": "rolled over" if env.upright() < MIN_UPRIGHT
                    else "left the arena", "at_s": round((step + 1) * env.control_dt, 2)}
        if step >= STEPS - KEPT:
            xy.append([info["x"], info["y"]])
            speed.append(info["speed"])
            slip.append(np.degrees(np.arctan2(obs[3], obs[2])))
    radius, stray = fit_circle(np.array(xy))
    mean_speed = float(np.mean(speed))
    return {"throttle": throttle, "steer": steer, "radius_m": round(radius, 3), "stray_m": round(stray, 3),
            "speed_mps": round(mean_speed, 2), "speed_std": round(float(np.std(speed)), 3),
            "slip_deg": round(float(np.mean(slip)), 1), "slip_std_deg": round(float(np.std(slip)), 1),
            "lateral_g": round(mean_speed**2 / radius / 9.81, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--task", default="rc_car", help="rc_car_drift: the car on Drift-v0's brush tyres")
    parser.add_argument("--kinetic-ratio", type=float, default=1.0)
    parser.add_argument("--slide-angle", type=float, default=10.0, help="degrees")
    args = parser.parse_args()
    if args.kinetic_ratio != 1.0 and args.task != "rc_car":
        parser.error("--kinetic-ratio switches MuJoCo's contact friction: only for the rc_car task's tyres")
    env = make_task(args.task).make_env(SafetyConfig(), episode_steps=STEPS)
    stepper = KineticRearTyres(env, args.kinetic_ratio, args.slide_angle) if args.kinetic_ratio != 1.0 else None
    grid = [round(float(v), 1) for v in np.linspace(0.2, 1.0, 9)]
    rows = [hold(env, throttle, steer, stepper) for steer in grid for throttle in grid]
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
