"""
Running the registry: health, metrics, access logs, API documentation,
reloading the config and stopping gracefully.
"""
