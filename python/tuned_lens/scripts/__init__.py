"""Command-line training and evaluation of lenses (``tuned-lens train`` / ``tuned-lens eval``).

``ingredients`` loads models and sets up distributed runs, ``optim`` builds the optimiser and the
learning-rate schedule, ``checkpoint`` writes and reads resumable snapshots, ``train_loop`` and
``eval_loop`` hold the loops.
"""
