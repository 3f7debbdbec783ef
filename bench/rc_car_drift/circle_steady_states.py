"""Every steady state of the car on Drift-v0's tyres on the 1 m circle (bench/RESULTS.md, "A drift task").

For each speed v, solves the tyres' planar wrench (``sim/brush_tyres.planar_wrench``, the force model
``rc_car_drift`` simulates) for a steady counter-clockwise circle of radius R through the CoM: body slip
beta, front steer delta and rear wheel speed w such that the force is the centripetal one, m v^2 / R
towards the centre, and the yaw torque is zero at yaw rate v / R. Newton's method from many random
starts; a solution counts once, and only within the car's inputs (|delta| <= pi/6, 0 <= w <= the
motor's free speed). A steady state says what the circle at that speed asks of the car, not whether
held inputs reach it: most past the grip limit are unstable without feedback.

    .venv/bin/python bench/rc_car_drift/circle_steady_states.py bench/rc_car_drift/circle_steady_states.json
"""
import argparse
import json

import numpy as np

from loop_ros.core.config import SafetyConfig
from loop_ros.core.tasks import make_task
from loop_ros.sim.brush_tyres import planar_wrench

STARTS = 120
SPEEDS = np.r_[np.arange(2.0, 3.175, 0.05), np.arange(3.2, 4.005, 0.01)]
"""m/s: finer where the grip branch ends and the sliding one lives (a band of a few cm/s)."""


def residual(env, x: np.ndarray, speed: float, radius: float) -> np.ndarray:
    """(force - centripetal force) / m along the body axes, and the yaw torque / I_z."""
    beta, steer, wheel_speed = x
    car = env.car
    yaw_rate = speed / radius
    force_x, force_y, torque = planar_wrench(env.tyres, car, speed * np.cos(beta), speed * np.sin(beta),
                                             yaw_rate, steer, wheel_speed)
    centripetal = speed * yaw_rate
    return np.array([force_x / car["mass"] + centripetal * np.sin(beta),
                     force_y / car["mass"] - centripetal * np.cos(beta), torque / car["yaw_inertia"]])


def solve(env, start: np.ndarray, speed: float, radius: float) -> np.ndarray | None:
    """Newton's method with a finite-difference Jacobian and steps of at most 0.3."""
    x = np.array(start, dtype=float)
    for _ in range(60):
        r = residual(env, x, speed, radius)
        if np.max(np.abs(r)) < 1e-9:
            return x
        jacobian = np.empty((3, 3))
        for j in range(3):
            nudged = x.copy()
            nudged[j] += 1e-7
            jacobian[:, j] = (residual(env, nudged, speed, radius) - r) / 1e-7
        try:
            step = np.linalg.solve(jacobian, -r)
        except np.linalg.LinAlgError:
            return None
        x += step * min(1.0, 0.3 / max(np.max(np.abs(step)), 1e-12))
    return x if np.max(np.abs(residual(env, x, speed, radius))) < 1e-7 else None


def rear_slide_fraction(env, x: np.ndarray, speed: float, radius: float) -> float:
    """The rear tyres' combined slip over the slip of a full slide (> 1: sliding, on mu_kinetic)."""
    beta, _, wheel_speed = x
    tyres, car = env.tyres, env.car
    sigma_x, sigma_y = tyres.slip(speed * np.cos(beta), speed * np.sin(beta) - car["rear_axle"] * speed / radius,
                                  wheel_speed)
    gamma = np.hypot(tyres.longitudinal_stiffness * sigma_x, tyres.cornering_stiffness * sigma_y)
    return float(gamma / (3.0 * tyres.mu_static * car["rear_load"]))


def steady_states(env, speed: float, radius: float, rng) -> list[dict]:
    found = []
    for _ in range(STARTS):
        x = solve(env, [rng.uniform(-1.2, 0.3), rng.uniform(-env.max_steer, env.max_steer),
                        rng.uniform(0.0, env.max_wheel_speed)], speed, radius)
        if (x is None or abs(x[1]) > env.max_steer or not 0.0 <= x[2] <= env.max_wheel_speed
                or any(np.allclose(x, f["x"], atol=1e-4) for f in found)):
            continue
        found.append({"x": x, "speed_mps": round(speed, 2), "lateral_g": round(speed**2 / radius / 9.81, 2),
                      "slip_deg": round(float(np.degrees(x[0])), 1), "steer": round(float(x[1] / env.max_steer), 3),
                      "throttle": round(float(x[2] / env.max_wheel_speed), 3),
                      "rear_slide_fraction": round(rear_slide_fraction(env, x, speed, radius), 2)})
    return [{key: value for key, value in f.items() if key != "x"} for f in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--radius", type=float, default=1.0)
    args = parser.parse_args()
    env = make_task("rc_car_drift").make_env(SafetyConfig())
    rng = np.random.default_rng(0)
    rows = []
    for speed in SPEEDS:
        found = steady_states(env, float(speed), args.radius, rng)
        rows.extend(found or [{"speed_mps": round(float(speed), 2), "none": True}])
        print(f"{speed:.2f} m/s:", found or "no steady state within the inputs", flush=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
