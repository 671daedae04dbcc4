"""Scaling-law fits of a sweep's runs table: IsoFLOP vertices and power laws (Approach 2), the
parametric law (Approach 3), bootstrap intervals, the compute multiplier between arms, and plots.
See docs/methods.md for the conventions."""

import os

# Must run before scipy loads its OpenBLAS: the fits make thousands of tiny BLAS calls inside
# L-BFGS-B, which a multi-threaded OpenBLAS slows down up to 70x when other processes keep the
# cores busy (measured on the 2-core CI machine). An explicit setting by the user wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
