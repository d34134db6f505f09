"""Mainstay supervisor: the control plane of the mesh."""
