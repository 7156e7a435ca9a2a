"""Old name of :mod:`tuned_lens.training` (the training and evaluation engine behind the CLI).

``tuned_lens.scripts`` and every ``tuned_lens.scripts.<module>`` (``checkpoint``, ``commands``,
``eval_loop``, ``ingredients``, ``optim``, ``train_loop``) stay importable for code written
against earlier versions and the original library; each submodule here is the very module
object of :mod:`tuned_lens.training` of the same name, so attributes and monkeypatches are
shared. New code imports :mod:`tuned_lens.training`.
"""
