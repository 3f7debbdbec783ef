"""Drift-v0's tyres: a brush (Fiala) tyre model whose full slide grips harder than its grip limit.

The LOOP paper's RC-car task is Drift-v0 (its ref. [56]: ``driftgym``, over ``r-pad/aa_simulation``),
a dynamic bicycle on brush tyres with the FFAST car's constants. A tyre's force grows with its slip
up to ``mu_static x load`` and, once the whole contact patch slides, jumps to ``mu_kinetic x load``:
on that car's rear tyres 1.96 against 1.37, so a sliding tail carries 43 % more side force than a
gripping one and the fastest way round a circle is a drift. A MuJoCo contact has one friction
coefficient and cannot do that (bench/RESULTS.md, "A drift task"), so ``RcCarEnv`` with these tyres
applies their forces to the chassis itself and its wheel contacts only carry the weight.

The model, per axle (numpy, any batch shape):
  slip        sigma = ((w - u), -v) / max(|w|, |u|, SLIP_MIN_SPEED)
              with (u, v) the axle's velocity in the wheel frame (forward, left) and w the wheel's
              surface speed (the commanded one at the driven rear, u at a free-rolling front).
              While driving (w > u > 0) this is Drift-v0's (K / (1 + K), tan(alpha) / (1 + K)),
              K = (w - u) / u; rolling freely it is (0, -tan(alpha)). Dividing by the larger speed
              keeps it within [-1, 1] when braking, where Drift-v0 mirrors the slip to a drive's.
  combined    gamma = |(C_x sigma_x, C_alpha sigma_y)|
  magnitude   F = gamma - gamma^2 / S + gamma^3 / (3 S^2),   S = 3 mu_static load,  while gamma <= S
              F = mu_kinetic load                                                    beyond (full slide)
  force       (F_x, F_y) = F (C_x sigma_x, C_alpha sigma_y) / gamma
``SLIP_MIN_SPEED`` is ours: Drift-v0 integrates with an adaptive solver and special-cases speeds
under 1 cm/s; a 2 ms MuJoCo step needs the slip's denominator bounded away from zero instead. At
0.1 m/s the car's fastest mode (both axles and the yaw coupling) decays at 0.87 / step with straight
wheels and about 1.05 / step standing at full lock with the rear locked: stable (the limit is 2), though
past 1 the discrete response alternates sign from step to step. A smaller ``SLIP_MIN_SPEED`` or a longer
timestep uses up this margin fast.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SLIP_MIN_SPEED = 0.1
"""m/s: below this speed the slip is measured against it (see the module docstring)."""


@dataclass(frozen=True)
class BrushTyres:
    """The FFAST car's tyre constants as Drift-v0 uses them (``rccar.yml``), per axle.

    The front tyres saturate at ``mu_static`` (Drift-v0's front model has no kinetic jump); the
    driven rear ones jump to ``mu_kinetic`` in a full slide. Drift-v0's damping is kept too: it takes
    ``linear_damping x v`` and ``yaw_damping x yaw rate`` off the accelerations.
    """

    cornering_stiffness: float = 56.4  # C_alpha, N/rad
    longitudinal_stiffness: float = 103.94  # C_x, N
    mu_static: float = 1.37
    mu_kinetic: float = 1.96
    linear_damping: float = 0.025  # 1/s
    yaw_damping: float = 0.02  # 1/s

    def slip(self, u, v, wheel_speed) -> tuple[np.ndarray, np.ndarray]:
        """(sigma_x, sigma_y) of an axle moving at (u, v) in its wheel frame with ``wheel_speed``."""
        u, v, wheel_speed = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (u, v, wheel_speed)))
        reference = np.maximum(np.maximum(np.abs(wheel_speed), np.abs(u)), SLIP_MIN_SPEED)
        return (wheel_speed - u) / reference, -v / reference

    def forces(self, sigma_x, sigma_y, load, mu_kinetic) -> tuple[np.ndarray, np.ndarray]:
        """(F_x, F_y) in the wheel frame (N) for slips ``sigma`` and normal ``load`` (N)."""
        stiff_x = self.longitudinal_stiffness * np.asarray(sigma_x, dtype=float)
        stiff_y = self.cornering_stiffness * np.asarray(sigma_y, dtype=float)
        gamma = np.hypot(stiff_x, stiff_y)
        saturation = 3.0 * self.mu_static * load
        gripping = gamma - gamma**2 / saturation + gamma**3 / (3.0 * saturation**2)
        magnitude = np.where(gamma <= saturation, gripping, mu_kinetic * load)
        per_gamma = np.divide(magnitude, gamma, out=np.zeros_like(gamma), where=gamma > 0.0)
        return stiff_x * per_gamma, stiff_y * per_gamma

    def front(self, u, v, load) -> tuple[np.ndarray, np.ndarray]:
        """A free-rolling steered axle: only side force, capped at ``mu_static x load``."""
        return self.forces(*self.slip(u, v, u), load, self.mu_static)

    def rear(self, u, v, wheel_speed, load) -> tuple[np.ndarray, np.ndarray]:
        """The driven axle, its wheels turning at ``wheel_speed`` (m/s at the tread)."""
        return self.forces(*self.slip(u, v, wheel_speed), load, self.mu_kinetic)


def planar_wrench(tyres: BrushTyres, car: dict, v_long, v_lat, yaw_rate, steer, wheel_speed):
    """Force (body frame, N) and yaw torque (N m) on the car's CoM from its tyres and damping.

    ``car``: ``mass``, ``yaw_inertia``, ``front_axle`` / ``rear_axle`` (m from the CoM, both > 0)
    and ``front_load`` / ``rear_load`` (N). Drift-v0's bicycle: one tyre pair per axle, on the
    car's centre line; ``steer`` is the front wheels' angle (rad, positive left).
    """
    front_v = v_lat + car["front_axle"] * yaw_rate
    cos_steer, sin_steer = np.cos(steer), np.sin(steer)
    front_x, front_y = tyres.front(cos_steer * v_long + sin_steer * front_v,
                                   -sin_steer * v_long + cos_steer * front_v, car["front_load"])
    rear_x, rear_y = tyres.rear(v_long, v_lat - car["rear_axle"] * yaw_rate, wheel_speed, car["rear_load"])
    front_body_x = cos_steer * front_x - sin_steer * front_y
    front_body_y = sin_steer * front_x + cos_steer * front_y
    mass = car["mass"]
    force_x = front_body_x + rear_x - tyres.linear_damping * mass * v_long
    force_y = front_body_y + rear_y - tyres.linear_damping * mass * v_lat
    torque = (car["front_axle"] * front_body_y - car["rear_axle"] * rear_y
              - tyres.yaw_damping * car["yaw_inertia"] * yaw_rate)
    return force_x, force_y, torque
