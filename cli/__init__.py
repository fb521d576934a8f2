"""Trapline's entry points: the `trapline` command, the demo and the broker runner.

They sit above every part (edge, server, training, export) and import each one only when the
command that needs it runs.
"""
