"""
The HTTP face of the registry: the site, the streaming request, the /v2 router.
"""
