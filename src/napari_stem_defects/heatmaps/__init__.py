"""Defect probability heatmaps: per-class maps over whole images, from a sliding-window
patch classifier or an attention U-Net, their uncertainty, and the regions above a threshold."""
