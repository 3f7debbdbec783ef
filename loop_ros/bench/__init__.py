"""The benchmarks of ``loop-ros bench`` (DESIGN.md section 8), one module each; the command
(parsing, JSON output) is ``loop_ros.commands.bench``.

- ``plan`` (``bench plan``): planning speed of a preset's network sizes (random weights: speed does
  not depend on them): plans/s, median and p99 latency, the plan's matmul FLOPs, a plain fp32 GEMM
  of the plan's widest layer measured in the same run on the same threads, and their ratio.
- ``loop`` (``bench loop``): sim in the loop for a fixed time under the trainer's load: achieved
  rate, tick jitter, deadline misses and the trainer's share of the machine.
- ``smoothing`` (``bench smoothing``): closed-loop return of ARC's mean/variance smoothing factors
  on the point mass with its exact model.
- ``machine``: the machine a result was measured on.
"""
