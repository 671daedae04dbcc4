"""Scaling-law fits of a sweep's runs table: IsoFLOP vertices and power laws (Approach 2), the
parametric law (Approach 3), bootstrap intervals, the compute multiplier between arms, and plots.
See docs/methods.md for the conventions."""
