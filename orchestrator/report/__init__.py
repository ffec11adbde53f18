"""The report: sources (results or MLflow), analysis, bootstrap, figures, rendering.

Reads results only: nothing here imports torch, Ray or a method.

Kept empty on purpose: importing one module must not import its siblings.
"""
