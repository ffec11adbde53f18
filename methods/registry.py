"""Methods by the name a study file uses: name -> Method class (with .Params)."""
from datasets.registry import Registry

METHODS: Registry = Registry("method")
