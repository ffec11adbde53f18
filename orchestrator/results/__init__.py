"""Typed trial records, their store, statistics, objectives, summary, MLflow tracking.

numpy and MLflow only: nothing here imports torch, Ray or a method.

Kept empty on purpose: importing one module must not import its siblings.
"""
