"""Lava Processes (process.py) and their ProcessModels (models.py) for QFFS.

Lava's compiler imports every module in this folder when it looks for models, so it
holds the Processes and their models and nothing else.
"""
