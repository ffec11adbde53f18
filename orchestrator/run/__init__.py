"""Running a study: driver, worker trainable, Tune callbacks, search, checkpoints.

Kept empty on purpose: importing one module must not import its siblings.
"""
