"""Loaders for the public datasets the papers use, each reading the files as their publishers ship them.

Kept free of imports so that ``learec.config`` can import the option models cheaply.
"""
