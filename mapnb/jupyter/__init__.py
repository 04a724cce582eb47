"""The notebook layer: ``%%map_task``, the live grid and how a run waits on screen.

- :mod:`.magic`: the ``%%map_task`` cell magic and ``%map_task`` line magic.
- :mod:`.grid`: what the grid shows, as plain data, and the static HTML picture.
- :mod:`.widget`: the throttled live widget (anywidget, or core ipywidgets).
- :mod:`.busy`: the grid answering while the kernel runs a blocking cell.
- :mod:`.progress`: a blocking run's wait: the grid in a notebook, tqdm on a terminal.
- ``assets/``: the anywidget front end (grid.js, grid.css).

Nothing below this layer imports it: :mod:`mapnb` registers it as the runs' display hook
(:func:`mapnb.run.set_display_hook`).
"""
