"""The module of the flytekit tasks ``backend="flyte"`` makes from plain functions and
``%%map_task`` cells (see :mod:`mapnb.flyte._translate`).

Nothing is defined here, on purpose: a made task's function names this module, so its
name on Flyte reads ``mapnb.flyte.wrapped.<function>``, and cloudpickle, finding no such
attribute here, sends the function by value (as Flyte's interactive mode needs).
"""
