"""Face verification and recognition as the course builds it.

An embedding network ``f(x)`` (an L2-normalised vector) trained with the triplet loss
(:mod:`cnnkit.faces.losses`), identity folders and a synthetic face generator
(:mod:`cnnkit.faces.data`), thresholds calibrated on the user's own pairs
(:mod:`cnnkit.faces.verify`), and a one-shot recognition database in SQLite
(:mod:`cnnkit.faces.db`).
"""
