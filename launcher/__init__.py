"""The composition root: builds each component from the settings and runs them together.

It is the only package that imports several components; they never import each other.
"""
