"""
Where registry content lives: the storage interface and its implementations.
"""
