"""Ray clusters: joining one by address (connect) and Ray Jobs (submit, status, logs).

Kept empty on purpose: importing one module must not import its siblings.
"""
