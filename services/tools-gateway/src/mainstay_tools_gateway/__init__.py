"""Mainstay tools gateway: one governed door for every tool call."""
