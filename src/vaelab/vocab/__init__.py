"""Vocabulary: the names everything else agrees on (metrics, tags, choices, errors).

Imports nothing of vaelab and no framework: every layer may use it.
"""
