"""Constant-input sweep of the MuJoCo car (bench/RESULTS.md, "A drift task"): hold (throttle, steer)
for 12 s from the evaluation start ``reset(seed=0)`` and describe the last 3 s: the radius of the
circle the CoM drives (least-squares fit) and how far the path strays from it, the speed, and the body
slip angle atan2(v_lat, v_long); or how the run ended early (rolled over, or left the 3 m arena).

    .venv/bin/python bench/rc_car_drift/steady_states.py bench/rc_car_drift/steady_states.json
"""
import json
import sys

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


def hold(env, throttle: float, steer: float) -> dict:
    env.reset(seed=0)
    xy, speed, slip = [], [], []
    for step in range(STEPS):
        obs, _, _, terminated, _, info = env.step([throttle, steer])
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


def main(out: str) -> None:
    env = make_task("rc_car").make_env(SafetyConfig(), episode_steps=STEPS)
    grid = [round(float(v), 1) for v in np.linspace(0.2, 1.0, 9)]
    rows = [hold(env, throttle, steer) for steer in grid for throttle in grid]
    with open(out, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main(sys.argv[1])
