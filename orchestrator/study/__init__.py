"""The study file: schema, loading and --set, orders, expansion into trials.

Kept empty on purpose: importing one module must not import its siblings.
"""
