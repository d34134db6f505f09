"""Mainstay execution: durable, self-healing agent tasks across the mesh."""
