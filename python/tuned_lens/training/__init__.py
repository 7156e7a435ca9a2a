"""The training and evaluation engine behind ``tuned-lens train`` / ``tuned-lens eval``.

``ingredients`` sets up (optionally distributed) devices and says what the CLI loads (models
through :mod:`tuned_lens.model_loading`), ``optim`` builds the optimiser and the learning-rate
schedule, ``checkpoint`` writes and reads resumable snapshots, ``train_loop`` and ``eval_loop``
hold the loops, ``commands`` runs a whole command (load, loop, write the results).

Earlier versions called this package ``tuned_lens.scripts``; that name still works.
"""
