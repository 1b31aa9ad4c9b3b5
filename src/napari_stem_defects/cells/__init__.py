"""Unit cells: geometry, defect classes (physics baseline and CNN), statistics."""
