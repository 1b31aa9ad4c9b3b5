"""Quantitative lattice analysis: strain and rotation maps, profiles around defects, class averages and
column cross-sections (pure numpy/scipy, no Qt)."""
