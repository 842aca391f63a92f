"""Rendering for the text-to-3D engine: cameras, occupancy grid, shading, volume rendering."""
